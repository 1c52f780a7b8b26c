"""Step bodies: ``do``, ``on``, ``wait``, ``fail``, and when a step completes."""

from __future__ import annotations

from typing import Any

from actors import Server, clock_of

from stepkernel import ActionStatus, App, Registry, StepStatus
from stepkernel.testing import drain


def test_do_fans_out_on_same_actor(reg: Registry, app: App) -> None:
    """``step.do(name, *args)`` creates a child on the step's actor with those arguments."""
    reg.action(Server, "ping", steps=[lambda step, s, n: None])
    reg.action(Server, "deploy", steps=[lambda step, s: step.do("ping", 5)])
    root = app.invoke_now(Server(7), "deploy")
    drain(app)
    child = app.get(f"{root.id}.0.0")
    assert (child.name, child.actor_key, child.arguments) == ("ping", "7", (5,))
    assert child.parent_id == root.id
    assert app.get(root.id or "").status is ActionStatus.SUCCEEDED


def test_on_fans_out_on_each_actor_skipping_none(reg: Registry, app: App) -> None:
    """``step.on(actors, ...)`` creates one child per actor; ``None`` entries are ignored."""
    reg.action(Server, "ping", steps=[lambda step, s: None])
    reg.action(
        Server,
        "deploy",
        steps=[lambda step, s: step.on([Server(2), None, Server(3)], "ping")],
    )
    root = app.invoke_now(Server(1), "deploy")
    drain(app)
    children = app.tree(root.id or "").children
    assert [c.action.actor_key for c in children] == ["2", "3"]
    assert app.get(root.id or "").status is ActionStatus.SUCCEEDED


def test_on_none_fans_out_nothing(reg: Registry, app: App) -> None:
    """``step.on(None, ...)`` does nothing; the step completes at once."""
    reg.action(Server, "ping")
    reg.action(Server, "deploy", steps=[lambda step, s: step.on(None, "ping")])
    action = app.invoke_now(Server(1), "deploy")
    assert action.status is ActionStatus.SUCCEEDED
    assert action.steps[0].dependencies == ()


def test_wait_holds_step_until_clock_passes(reg: Registry, app: App) -> None:
    """``step.wait(s)``: the step is not complete before the clock passes *s* seconds,
    and completes once it has."""
    reg.action(Server, "deploy", steps=[lambda step, s: step.wait(5)])
    action = app.invoke_now(Server(1), "deploy")
    assert action.id is not None
    clock = clock_of(app)
    clock.advance(4.9)
    app.run_pending()
    assert app.get(action.id).steps[0].status is StepStatus.PERFORMING
    clock.advance(0.1)
    app.run_pending()
    assert app.get(action.id).status is ActionStatus.SUCCEEDED


def test_fail_marks_step_failed_without_raising(reg: Registry, app: App) -> None:
    """``step.fail(reason)`` fails the step (and the action) at once, with no retry."""
    runs: list[int] = []

    def body(step: Any, s: Server) -> None:
        runs.append(1)
        step.fail("disk full")

    reg.action(Server, "deploy", steps=[body, lambda step, s: runs.append(2)])
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    action = app.get(action.id or "")
    assert action.status is ActionStatus.FAILED
    assert action.steps[0].status is StepStatus.FAILED
    assert action.steps[0].error is not None
    assert action.steps[0].error.message == "disk full"
    assert runs == [1]


def test_step_completes_only_when_everything_settled(reg: Registry, app: App) -> None:
    """A step with a child and a wait stays performing after the child finished, until
    the wait has settled too."""
    reg.action(Server, "ping", steps=[lambda step, s: None])

    def body(step: Any, s: Server) -> None:
        step.do("ping")
        step.wait(10)

    reg.action(Server, "deploy", steps=[body])
    action = app.invoke_now(Server(1), "deploy")
    app.run_pending()
    assert app.get(f"{action.id}.0.0").status is ActionStatus.SUCCEEDED
    step = app.get(action.id or "").steps[0]
    assert step.status is StepStatus.PERFORMING
    assert step.settled == {f"{action.id}.0.0"}
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_unsuccessful_child_fails_step_and_action(reg: Registry, app: App) -> None:
    """One unsuccessful child fails the parent step once all settled, which fails the
    action; its later steps never run."""
    ran: list[str] = []
    reg.action(Server, "ok", steps=[lambda step, s: None])
    reg.action(Server, "bad", steps=[lambda step, s: step.fail("no")])

    def fan_out(step: Any, s: Server) -> None:
        step.do("ok")
        step.do("bad")

    reg.action(Server, "deploy", steps=[fan_out, lambda step, s: ran.append("next")])
    root = app.invoke_now(Server(1), "deploy")
    drain(app)
    final = app.get(root.id or "")
    assert final.status is ActionStatus.FAILED
    assert final.steps[0].status is StepStatus.FAILED
    assert final.steps[0].failures == {f"{root.id}.0.1"}
    assert final.error is not None
    assert final.error.type == "ChildFailed"
    assert ran == []


def test_next_step_waits_for_previous(reg: Registry, app: App) -> None:
    """The next step does not start before the previous one completed."""
    ran: list[str] = []
    reg.action(Server, "hold", outbound=True, steps=[lambda step, s: None])
    reg.action(
        Server,
        "deploy",
        steps=[lambda step, s: step.do("hold"), lambda step, s: ran.append("second")],
    )
    root = app.invoke_now(Server(1), "deploy")
    drain(app)
    assert ran == []
    assert len(app.get(root.id or "").steps) == 1
    app.complete(f"{root.id}.0.0")
    drain(app)
    assert ran == ["second"]
    assert app.get(root.id or "").status is ActionStatus.SUCCEEDED
