"""Cancelling from outside."""

from __future__ import annotations

from typing import Any

import pytest
from actors import Server, records, statuses

from stepkernel import ActionFinishedError, ActionNotFoundError, ActionStatus, App, Registry
from stepkernel.testing import drain


def _tree(reg: Registry) -> None:
    reg.action(Server, "hold", outbound=True, steps=[lambda step, s: None])
    reg.action(Server, "middle", steps=[lambda step, s: step.do("hold")])
    reg.action(Server, "parent", steps=[lambda step, s: step.do("middle")])


def test_cancel_cancels_action_and_descendants(reg: Registry, app: App) -> None:
    """``App.cancel`` cancels the action, then its in-flight descendants."""
    _tree(reg)
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    done = app.cancel(parent.id or "", reason="operator")
    assert done.status is ActionStatus.CANCELLED
    assert done.error is not None
    assert (done.error.type, done.error.message) == ("Cancelled", "operator")
    drain(app)
    assert set(statuses(app, parent.id).values()) == {"cancelled"}
    assert app.store.queued() == []


def test_cancel_stops_later_steps(reg: Registry, app: App) -> None:
    """A cancelled action runs none of its remaining steps, nor a pending retry."""
    runs: list[str] = []

    def flaky(step: Any, s: Server) -> None:
        runs.append("flaky")
        raise RuntimeError("again")

    reg.action(Server, "job", steps=[flaky, lambda step, s: runs.append("next")])
    action = app.invoke_now(Server(1), "job")
    app.cancel(action.id or "")
    drain(app)
    assert runs == ["flaky"]


def test_cancel_queued_action_leaves_lane(reg: Registry, app: App) -> None:
    """A cancelled pending action never starts when the lane frees up."""
    ran: list[int] = []
    reg.action(
        Server, "hold", outbound=True, concurrency_key=lambda s: "L", steps=[lambda step, s: None]
    )
    reg.action(Server, "work", concurrency_key=lambda s: "L", steps=[lambda step, s: ran.append(1)])
    holder = app.invoke_now(Server(1), "hold")
    queued = app.invoke_now(Server(2), "work")
    assert app.cancel(queued.id or "").status is ActionStatus.CANCELLED
    app.complete(holder.id or "")
    drain(app)
    assert ran == []
    assert not [k for k in records(app) if k[0] == "lane"]


def test_cancel_unknown_raises(reg: Registry, app: App) -> None:
    """Cancelling an unknown action raises ActionNotFoundError."""
    with pytest.raises(ActionNotFoundError):
        app.cancel("missing")


def test_cancel_finished_raises(reg: Registry, app: App) -> None:
    """Cancelling a finished action raises ActionFinishedError and changes nothing."""
    reg.action(Server, "job", steps=[lambda step, s: None])
    action = app.invoke_now(Server(1), "job")
    before = records(app)
    with pytest.raises(ActionFinishedError):
        app.cancel(action.id or "")
    assert records(app) == before


def test_cancelled_child_fails_parent_step(reg: Registry, app: App) -> None:
    """Cancelling a child from outside fails the parent step that waits on it."""
    _tree(reg)
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    app.cancel(f"{parent.id}.0.0")
    drain(app)
    final = app.get(parent.id or "")
    assert final.status is ActionStatus.FAILED
    assert final.steps[0].failures == {f"{parent.id}.0.0"}


def test_cancel_spares_child_shared_by_superseding(reg: Registry, app: App) -> None:
    """P2's child superseded P1's pending child and so also serves P1; cancelling P2
    must not cut that shared child, so P1 still succeeds."""
    reg.action(
        Server, "hold", outbound=True, concurrency_key=lambda s: "L", steps=[lambda step, s: None]
    )
    reg.action(Server, "work", concurrency_key=lambda s, n: "L", steps=[lambda step, s, n: None])
    reg.action(Server, "parent", steps=[lambda step, s, n: step.do("work", n)])
    holder = app.invoke_now(Server(1), "hold")
    p1 = app.invoke_now(Server(1), "parent", 1)
    p2 = app.invoke_now(Server(2), "parent", 2)
    assert app.get(f"{p1.id}.0.0").superseded_by == f"{p2.id}.0.0"
    app.cancel(p2.id or "")
    app.complete(holder.id or "")
    drain(app)
    assert app.get(p1.id or "").status is ActionStatus.SUCCEEDED


def test_cancel_lets_go_of_a_joined_action_without_cancelling_it(reg: Registry, app: App) -> None:
    """A parent whose step joined an in-flight root by checksum only lets go of it when
    cancelled: the joined root keeps running and succeeds."""
    reg.action(
        Server,
        "build",
        outbound=True,
        checksum=lambda s: "same",
        steps=[lambda step, s: None],
    )
    reg.action(Server, "parent", steps=[lambda step, s: step.on(Server(7), "build")])
    root = app.invoke_now(Server(7), "build")
    parent = app.invoke_now(Server(1), "parent")
    assert parent.steps[0].dependencies
    app.cancel(parent.id or "")
    drain(app)
    assert app.get(root.id or "").status is ActionStatus.PERFORMING
    assert app.complete(root.id or "").status is ActionStatus.SUCCEEDED
    assert app.get(parent.id or "").status is ActionStatus.CANCELLED
