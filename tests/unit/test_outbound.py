"""Outbound actions: completed from outside by id or by actor and name."""

from __future__ import annotations

from typing import Any

import pytest
from actors import Server, records

from stepkernel import (
    ActionFinishedError,
    ActionNotFoundError,
    ActionStatus,
    App,
    CompletionConflictError,
    NotOutboundError,
    Registry,
)
from stepkernel.testing import complete_outbound, drain


def _provision(reg: Registry) -> None:
    reg.action(Server, "provision", outbound=True, steps=[lambda step, s: None])


def test_outbound_waits_after_steps(reg: Registry, app: App) -> None:
    """After its steps an outbound action stays performing, awaiting completion."""
    _provision(reg)
    action = app.invoke_now(Server(1), "provision")
    drain(app)
    action = app.get(action.id or "")
    assert (action.status, action.awaiting_completion) == (ActionStatus.PERFORMING, True)
    assert all(s.status.value == "succeeded" for s in action.steps)


def test_complete_by_id(reg: Registry, app: App) -> None:
    """``App.complete(id)`` succeeds a waiting outbound action."""
    _provision(reg)
    action = app.invoke_now(Server(1), "provision")
    done = app.complete(action.id or "")
    assert (done.status, done.awaiting_completion) == (ActionStatus.SUCCEEDED, False)


def test_complete_outbound_by_actor_and_name(reg: Registry, app: App) -> None:
    """``App.complete_outbound(actor, name)`` completes the current one on that actor."""
    _provision(reg)
    mine = app.invoke_now(Server(1), "provision")
    other = app.invoke_now(Server(2), "provision")
    done = app.complete_outbound(Server(1), "provision")
    assert done.id == mine.id
    assert done.status is ActionStatus.SUCCEEDED
    assert app.get(other.id or "").status is ActionStatus.PERFORMING


def test_complete_outbound_without_waiting_action_raises(reg: Registry, app: App) -> None:
    """``App.complete_outbound`` with nothing performing raises ActionNotFoundError."""
    _provision(reg)
    with pytest.raises(ActionNotFoundError):
        app.complete_outbound(Server(1), "provision")


def test_testing_complete_outbound_helper(reg: Registry, app: App) -> None:
    """``stepkernel.testing.complete_outbound`` completes every waiting outbound action."""
    _provision(reg)
    ids = [app.invoke_now(Server(n), "provision").id for n in (1, 2)]
    done = complete_outbound(app, "succeeded")
    assert sorted(a.id or "" for a in done) == sorted(i or "" for i in ids)
    assert all(app.get(i or "").status is ActionStatus.SUCCEEDED for i in ids)


def test_drain_with_outbound_answer(reg: Registry, app: App) -> None:
    """``drain(app, outbound=...)`` completes waiting outbound actions as told."""
    _provision(reg)
    action = app.invoke_later(Server(1), "provision")
    drain(app, outbound=lambda a: ("succeeded", {"n": 1}))
    final = app.get(action.id or "")
    assert (final.status, final.output) == (ActionStatus.SUCCEEDED, {"n": 1})


def test_early_completion_is_kept_until_it_waits(reg: Registry, app: App) -> None:
    """A completion arriving while step 1 still waits on a child is kept, and applied
    once the action's steps are done."""
    reg.action(Server, "ping", steps=[lambda step, s: step.wait(10)])
    reg.action(Server, "provision", outbound=True, steps=[lambda step, s: step.do("ping")])
    action = app.invoke_now(Server(1), "provision")
    early = app.complete(action.id or "", payload={"ip": "10.0.0.1"})
    assert (early.status, early.outcome) == (ActionStatus.PERFORMING, "kept")
    drain(app)
    final = app.get(action.id or "")
    assert (final.status, final.output) == (ActionStatus.SUCCEEDED, {"ip": "10.0.0.1"})


def test_duplicate_completion_is_noop(reg: Registry, app: App) -> None:
    """Completing twice with the same completion changes nothing the second time."""
    _provision(reg)
    action = app.invoke_now(Server(1), "provision")
    app.complete(action.id or "", payload={"a": 1})
    before = records(app)
    again = app.complete(action.id or "", payload={"a": 1})
    assert again.outcome == "duplicate"
    assert records(app) == before


def test_duplicate_early_completion_is_noop(reg: Registry, app: App) -> None:
    """The same early completion twice is kept once."""
    reg.action(Server, "provision", outbound=True, steps=[lambda step, s: step.wait(5)])
    action = app.invoke_now(Server(1), "provision")
    app.complete(action.id or "")
    before = records(app)
    assert app.complete(action.id or "").outcome == "duplicate"
    assert records(app) == before


def test_complete_unknown_action_raises(reg: Registry, app: App) -> None:
    """Completing an unknown action raises ActionNotFoundError and changes nothing."""
    _provision(reg)
    app.invoke_now(Server(1), "provision")
    before = records(app)
    with pytest.raises(ActionNotFoundError):
        app.complete("nope")
    assert records(app) == before


def test_complete_finished_action_raises(reg: Registry, app: App) -> None:
    """Completing a finished action (differently) raises ActionFinishedError, no change."""
    _provision(reg)
    action = app.invoke_now(Server(1), "provision")
    app.complete(action.id or "")
    before = records(app)
    with pytest.raises(ActionFinishedError):
        app.complete(action.id or "", "failed")
    assert records(app) == before


def test_complete_non_outbound_raises(reg: Registry, app: App) -> None:
    """Completing an action that is not outbound raises NotOutboundError, no change."""
    reg.action(Server, "deploy", steps=[lambda step, s: step.wait(5)])
    action = app.invoke_now(Server(1), "deploy")
    before = records(app)
    with pytest.raises(NotOutboundError):
        app.complete(action.id or "")
    assert records(app) == before
    assert app.get(action.id or "").status is ActionStatus.PERFORMING


def test_completion_payload_is_recorded(reg: Registry, app: App) -> None:
    """The completion payload is stored and exposed as ``Action.output``."""
    _provision(reg)
    action = app.invoke_now(Server(1), "provision")
    payload: dict[str, Any] = {"ip": "10.0.0.1", "ports": [22, 443]}
    assert app.complete(action.id or "", payload=payload).output == payload
    assert app.get(action.id or "").output == payload


def test_complete_as_failed_fails_action(reg: Registry, app: App) -> None:
    """Completing as ``failed`` fails the action and its waiting parent step."""
    _provision(reg)
    reg.action(Server, "parent", steps=[lambda step, s: step.do("provision")])
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    done = app.complete(f"{parent.id}.0.0", "failed", payload={"why": "quota"})
    assert done.status is ActionStatus.FAILED
    assert done.error is not None
    drain(app)
    assert app.get(parent.id or "").status is ActionStatus.FAILED


def test_early_completion_of_queued_action(reg: Registry, app: App) -> None:
    """A completion for an outbound action still queued on its lane is kept and
    applied once it has started and run its steps."""
    reg.action(
        Server,
        "provision",
        outbound=True,
        concurrency_key=lambda s: "L",
        steps=[lambda step, s: None],
    )
    holder = app.invoke_now(Server(1), "provision")
    queued = app.invoke_now(Server(2), "provision")
    assert app.complete(queued.id or "", payload=7).outcome == "kept"
    app.complete(holder.id or "")
    drain(app)
    final = app.get(queued.id or "")
    assert (final.status, final.output) == (ActionStatus.SUCCEEDED, 7)


def test_different_early_completion_is_refused(reg: Registry, app: App) -> None:
    """While one early completion is kept, a different one raises
    CompletionConflictError and changes nothing; the first one wins."""
    reg.action(Server, "provision", outbound=True, steps=[lambda step, s: step.wait(5)])
    action = app.invoke_now(Server(1), "provision")
    app.complete(action.id or "", payload={"first": True})
    before = records(app)
    with pytest.raises(CompletionConflictError):
        app.complete(action.id or "", "failed")
    assert records(app) == before
    drain(app)
    final = app.get(action.id or "")
    assert (final.status, final.output) == (ActionStatus.SUCCEEDED, {"first": True})
