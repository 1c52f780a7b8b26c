"""Timeouts: armed at start, failing parents, cutting children, stopping steps."""

from __future__ import annotations

from typing import Any

import pytest
from actors import Server, clock_of, statuses

from stepkernel import ActionFinishedError, ActionStatus, App, Registry
from stepkernel.testing import drain


def test_timeout_armed_when_action_starts(reg: Registry, app: App) -> None:
    """The deadline counts from the start, not from when the first step returns: a step
    waiting longer than the timeout times the action out at start + timeout."""
    reg.action(Server, "slow", timeout=10, steps=[lambda step, s: step.wait(30)])
    action = app.invoke_now(Server(1), "slow")
    drain(app)
    final = app.get(action.id or "")
    assert final.status is ActionStatus.TIMED_OUT
    assert final.started_at is not None
    assert final.finished_at == final.started_at + 10
    assert final.error is not None
    assert final.error.type == "Timeout"


def test_action_within_timeout_succeeds(reg: Registry, app: App) -> None:
    """An action finishing before its deadline succeeds; the timer does nothing later."""
    reg.action(Server, "quick", timeout=10, steps=[lambda step, s: step.wait(3)])
    action = app.invoke_now(Server(1), "quick")
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_timeout_counts_from_start_when_queued(reg: Registry, app: App) -> None:
    """An action queued on its lane is not timed out while pending: its deadline is
    armed when it starts."""
    reg.action(
        Server, "hold", outbound=True, concurrency_key=lambda s: "L", steps=[lambda step, s: None]
    )
    reg.action(
        Server,
        "quick",
        timeout=10,
        concurrency_key=lambda s: "L",
        steps=[lambda step, s: step.wait(3)],
    )
    holder = app.invoke_now(Server(1), "hold")
    queued = app.invoke_now(Server(2), "quick")
    clock_of(app).advance(60)
    app.complete(holder.id or "")
    drain(app)
    assert app.get(queued.id or "").status is ActionStatus.SUCCEEDED


def test_timed_out_child_fails_parent_step(reg: Registry, app: App) -> None:
    """A child that times out fails its parent's step and the parent."""
    reg.action(Server, "slow", timeout=5, steps=[lambda step, s: step.wait(30)])
    reg.action(Server, "parent", steps=[lambda step, s: step.do("slow")])
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    assert statuses(app, parent.id) == {parent.id: "failed", f"{parent.id}.0.0": "timed_out"}


def test_timed_out_action_cancels_children(reg: Registry, app: App) -> None:
    """In-flight children (and their children) of a timed-out action are cancelled."""
    reg.action(Server, "hold", outbound=True, steps=[lambda step, s: None])
    reg.action(Server, "middle", steps=[lambda step, s: step.do("hold")])
    reg.action(Server, "parent", timeout=5, steps=[lambda step, s: step.do("middle")])
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    assert statuses(app, parent.id) == {
        parent.id: "timed_out",
        f"{parent.id}.0.0": "cancelled",
        f"{parent.id}.0.0.0.0": "cancelled",
    }
    assert app.store.queued() == []


def test_no_step_runs_after_timeout(reg: Registry, app: App) -> None:
    """Once timed out, no step body runs again: neither a pending retry nor the next
    step."""
    runs: list[str] = []

    def flaky(step: Any, s: Server) -> None:
        runs.append("flaky")
        raise RuntimeError("again")

    reg.action(Server, "slow", timeout=0.5, steps=[flaky, lambda step, s: runs.append("next")])
    action = app.invoke_now(Server(1), "slow")
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.TIMED_OUT
    assert runs == ["flaky"]


def test_completion_after_timeout_is_refused(reg: Registry, app: App) -> None:
    """An outbound action that timed out cannot be completed any more."""
    reg.action(Server, "provision", outbound=True, timeout=5, steps=[lambda step, s: None])
    action = app.invoke_now(Server(1), "provision")
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.TIMED_OUT
    with pytest.raises(ActionFinishedError):
        app.complete(action.id or "")
