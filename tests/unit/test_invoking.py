"""Invoking: ``invoke_now`` runs inline until the action waits; ``invoke_later`` only
enqueues; idempotency keys map to one root."""

from __future__ import annotations

from typing import Any

from actors import Server, records

from stepkernel import ActionStatus, App, Registry, StepStatus
from stepkernel.testing import drain


def test_invoke_now_runs_to_the_end(reg: Registry, app: App) -> None:
    """``invoke_now`` runs every step inline when nothing waits and returns the result."""
    reg.action(Server, "deploy", steps=[lambda step, s: None, lambda step, s: None])
    action = app.invoke_now(Server(1), "deploy")
    assert action.status is ActionStatus.SUCCEEDED
    assert [s.status for s in action.steps] == [StepStatus.SUCCEEDED] * 2
    assert action.outcome == "created"


def test_invoke_now_stops_at_children(reg: Registry, app: App) -> None:
    """``invoke_now`` returns when the step waits on a child; the child has not run."""
    ran: list[str] = []
    reg.action(Server, "ping", steps=[lambda step, s: ran.append("child")])
    reg.action(Server, "deploy", steps=[lambda step, s: step.do("ping")])
    action = app.invoke_now(Server(1), "deploy")
    assert action.status is ActionStatus.PERFORMING
    assert action.steps[0].status is StepStatus.PERFORMING
    assert action.steps[0].dependencies == (f"{action.id}.0.0",)
    assert ran == []


def test_invoke_now_stops_at_timers(reg: Registry, app: App) -> None:
    """``invoke_now`` returns when the step waits on a timer; the next step has not run."""
    ran: list[str] = []
    reg.action(
        Server,
        "deploy",
        steps=[lambda step, s: step.wait(30), lambda step, s: ran.append("second")],
    )
    action = app.invoke_now(Server(1), "deploy")
    assert action.status is ActionStatus.PERFORMING
    assert len(action.steps) == 1
    assert ran == []


def test_invoke_now_stops_at_outbound_completion(reg: Registry, app: App) -> None:
    """``invoke_now`` of an outbound action returns it performing and awaiting completion."""
    reg.action(Server, "provision", outbound=True, steps=[lambda step, s: None])
    action = app.invoke_now(Server(1), "provision")
    assert action.status is ActionStatus.PERFORMING
    assert action.awaiting_completion


def test_invoke_later_only_enqueues(reg: Registry, app: App) -> None:
    """``invoke_later`` stores the action with a queued run message; nothing runs until
    the queue is drained."""
    ran: list[int] = []
    reg.action(Server, "deploy", steps=[lambda step, s: ran.append(1)])
    action = app.invoke_later(Server(1), "deploy")
    assert action.status in (ActionStatus.PENDING, ActionStatus.PERFORMING)
    assert [m.id for m in app.store.queued(action_id=action.id)] == [f"run:{action.id}:0:0"]
    assert ran == []
    drain(app)
    assert ran == [1]
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_invoke_later_same_idempotency_key_same_root(reg: Registry, app: App) -> None:
    """The same idempotency key returns the same root and stores no second record."""
    reg.action(Server, "deploy", steps=[lambda step, s, v: None])
    first = app.invoke_later(Server(1), "deploy", "v1", idempotency_key="deploy-42")
    before: dict[Any, Any] = records(app)
    second = app.invoke_later(Server(1), "deploy", "v1", idempotency_key="deploy-42")
    assert second.id == first.id
    assert second.outcome == "exists"
    assert records(app) == before


def test_invoke_now_same_idempotency_key_runs_once(reg: Registry, app: App) -> None:
    """``invoke_now`` twice with one idempotency key runs the body once."""
    ran: list[int] = []
    reg.action(Server, "deploy", steps=[lambda step, s: ran.append(1)])
    first = app.invoke_now(Server(1), "deploy", idempotency_key="k")
    second = app.invoke_now(Server(1), "deploy", idempotency_key="k")
    assert first.id == second.id
    assert second.status is ActionStatus.SUCCEEDED
    assert ran == [1]


def test_invoke_later_without_key_makes_new_roots(reg: Registry, app: App) -> None:
    """Without an idempotency key every invocation is a new root."""
    reg.action(Server, "deploy", steps=[lambda step, s: None])
    ids = {app.invoke_now(Server(1), "deploy").id for _ in range(3)}
    assert len(ids) == 3
