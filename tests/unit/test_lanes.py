"""Lanes: one performing action per concurrency key, FIFO queue, superseding."""

from __future__ import annotations

from typing import Any

from actors import Server, statuses

from stepkernel import ActionStatus, App, Registry
from stepkernel.testing import drain


def _lane(reg: Registry) -> None:
    """``hold`` (outbound) and ``work`` (one step) share the lane ``L``."""
    reg.action(
        Server,
        "hold",
        outbound=True,
        concurrency_key=lambda s, *a: "L",
        steps=[lambda step, s, *a: None],
    )
    reg.action(Server, "work", concurrency_key=lambda s, *a: "L", steps=[lambda step, s, *a: None])


def test_one_performing_action_per_lane(reg: Registry, app: App) -> None:
    """While one action holds the lane, the next one on it is queued ``pending``."""
    _lane(reg)
    holder = app.invoke_now(Server(1), "hold")
    queued = app.invoke_now(Server(2), "work")
    drain(app)
    assert holder.status is ActionStatus.PERFORMING
    assert queued.outcome == "queued"
    assert app.get(queued.id or "").status is ActionStatus.PENDING


def test_queued_action_starts_when_holder_finishes(reg: Registry, app: App) -> None:
    """When the holder finishes, the queued action starts and runs."""
    _lane(reg)
    holder = app.invoke_now(Server(1), "hold")
    queued = app.invoke_now(Server(2), "work")
    app.complete(holder.id or "")
    drain(app)
    assert app.get(queued.id or "").status is ActionStatus.SUCCEEDED


def test_same_action_same_actor_share_default_lane(reg: Registry, app: App) -> None:
    """By default an action's lane is ``Type/key/name``: invoking it twice on one actor
    queues the second."""
    reg.action(Server, "hold", outbound=True, steps=[lambda step, s: None])
    app.invoke_now(Server(1), "hold")
    other_actor = app.invoke_now(Server(2), "hold")
    same_actor = app.invoke_now(Server(1), "hold")
    assert other_actor.status is ActionStatus.PERFORMING
    assert same_actor.status is ActionStatus.PENDING


def test_newer_pending_supersedes_older(reg: Registry, app: App) -> None:
    """A newer pending action on a lane supersedes the older pending one."""
    _lane(reg)
    app.invoke_now(Server(1), "hold")
    older = app.invoke_later(Server(2), "work")
    newer = app.invoke_later(Server(3), "work")
    superseded = app.get(older.id or "")
    assert superseded.status is ActionStatus.SUPERSEDED
    assert superseded.superseded_by == newer.id
    assert app.get(newer.id or "").status is ActionStatus.PENDING


def test_newest_is_by_submission_order(reg: Registry, app: App) -> None:
    """ "Newer" means submitted later, whatever the ids: the last submitted one wins."""
    _lane(reg)
    app.invoke_now(Server(1), "hold")
    first = app.invoke_later(Server(2), "work", idempotency_key="zzz")
    second = app.invoke_later(Server(3), "work", idempotency_key="aaa")
    assert app.get(first.id or "").superseded_by == second.id
    assert app.get(second.id or "").status is ActionStatus.PENDING


def test_superseding_action_takes_over_waiting_parent(reg: Registry, app: App) -> None:
    """The parent step that waited on a superseded child completes when the action
    that superseded it finishes."""
    _lane(reg)
    reg.action(Server, "parent", steps=[lambda step, s: step.do("work", "child")])
    holder = app.invoke_now(Server(1), "hold")
    parent = app.invoke_now(Server(2), "parent")
    newer = app.invoke_later(Server(3), "work", "root")
    child = app.get(f"{parent.id}.0.0")
    assert child.status is ActionStatus.SUPERSEDED
    app.complete(holder.id or "")
    drain(app)
    assert app.get(newer.id or "").status is ActionStatus.SUCCEEDED
    assert app.get(parent.id or "").status is ActionStatus.SUCCEEDED


def test_collapsed_waits_of_one_step_complete(reg: Registry, app: App) -> None:
    """Several children of one step that collapse onto one action by superseding all
    settle when it finishes: the parent never hangs."""
    _lane(reg)

    def fan_out(step: Any, s: Server) -> None:
        step.do("work", 1)
        step.do("work", 2)
        step.do("work", 3)

    reg.action(Server, "parent", steps=[fan_out])
    holder = app.invoke_now(Server(1), "hold")
    parent = app.invoke_now(Server(1), "parent")
    app.complete(holder.id or "")
    drain(app)
    assert statuses(app, parent.id) == {
        parent.id: "succeeded",
        f"{parent.id}.0.0": "superseded",
        f"{parent.id}.0.1": "superseded",
        f"{parent.id}.0.2": "succeeded",
    }
    assert app.store.queued() == []


def test_collapsed_waits_across_steps_of_two_parents(reg: Registry, app: App) -> None:
    """Children of two different parents that collapse onto one action settle both."""
    _lane(reg)
    reg.action(Server, "parent", steps=[lambda step, s, n: step.do("work", n)])
    holder = app.invoke_now(Server(1), "hold")
    first = app.invoke_now(Server(1), "parent", 1)
    second = app.invoke_now(Server(2), "parent", 2)
    app.complete(holder.id or "")
    drain(app)
    assert app.get(first.id or "").status is ActionStatus.SUCCEEDED
    assert app.get(second.id or "").status is ActionStatus.SUCCEEDED
