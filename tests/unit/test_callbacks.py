"""After callbacks: per status, ``"all"``, attached later, and failing callbacks."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from actors import Server, records

from stepkernel import Action, ActionStatus, App, DefinitionError, Registry
from stepkernel.testing import drain, memory_app


def _succeed(step: Any, server: Server) -> None:
    """A step that does nothing."""


def _fail(step: Any, server: Server) -> None:
    step.fail("boom")


def _wait_long(step: Any, server: Server) -> None:
    step.wait(100)


def _run(app: App, status: str) -> Action:
    """Run ``job`` to *status* (its steps are chosen by the test's definition)."""
    action = app.invoke_now(Server(1), "job")
    assert action.id is not None
    if status == "cancelled":
        app.cancel(action.id)
    drain(app)
    return app.get(action.id)


_STEPS: dict[str, tuple[Callable[..., Any], float | None]] = {
    "succeeded": (_succeed, None),
    "failed": (_fail, None),
    "cancelled": (_wait_long, None),
    "timed_out": (_wait_long, 10),
}


@pytest.mark.parametrize("status", list(_STEPS))
def test_after_runs_for_its_status_only(reg: Registry, app: App, status: str) -> None:
    """``after(status)`` callbacks run when the action ends with that status, and the
    callbacks of the other statuses do not."""
    body, timeout = _STEPS[status]
    job = reg.action(Server, "job", steps=[body], timeout=timeout)
    ran: list[tuple[str, ActionStatus]] = []
    for name in _STEPS:
        job.after(name)(lambda action, server, name=name: ran.append((name, action.status)))
    final = _run(app, status)
    assert final.status.value == status
    assert ran == [(status, ActionStatus(status))]
    assert final.callbacks == "ok"


@pytest.mark.parametrize("status", list(_STEPS))
def test_after_all_runs_for_every_status(reg: Registry, app: App, status: str) -> None:
    """``after("all")`` runs for succeeded, failed, cancelled and timed_out alike."""
    body, timeout = _STEPS[status]
    job = reg.action(Server, "job", steps=[body], timeout=timeout)
    ran: list[ActionStatus] = []
    job.after("all")(lambda action, server: ran.append(action.status))
    assert _run(app, status).status.value == status
    assert ran == [ActionStatus(status)]


def test_after_receives_actor_and_arguments(reg: Registry, app: App) -> None:
    """A callback gets the action snapshot, the actor and the arguments."""
    seen: list[Any] = []
    job = reg.action(Server, "deploy", steps=[lambda step, s, v: None])
    job.after("succeeded")(lambda action, server, v: seen.append((action.name, server.id, v)))
    app.invoke_now(Server(4), "deploy", "v9")
    drain(app)
    assert seen == [("deploy", 4, "v9")]


def test_registry_after_attaches_to_defined_action(reg: Registry, app: App) -> None:
    """``Registry.after`` attaches a callback to an already defined action from elsewhere."""
    reg.action(Server, "job", steps=[_succeed])
    ran: list[str] = []
    reg.after(Server, "job", "succeeded")(lambda action, server: ran.append(action.name))
    _run(app, "succeeded")
    assert ran == ["job"]


def test_registry_after_before_definition(reg: Registry, app: App) -> None:
    """``Registry.after`` used before the action is defined attaches when it is."""
    ran: list[str] = []
    reg.after(Server, "job", "failed")(lambda action, server: ran.append(action.status.value))
    reg.action(Server, "job", steps=[_fail])
    _run(app, "failed")
    assert ran == ["failed"]


def _boom(action: Action, server: Server) -> None:
    raise RuntimeError("callback broke")


def test_failing_callback_keeps_status(reg: Registry, app: App) -> None:
    """A callback that keeps raising leaves the action's status as it was, with
    ``callbacks == "failed"`` and the callback's error recorded."""
    reg.action(Server, "job", steps=[_succeed]).after("succeeded")(_boom)
    final = _run(app, "succeeded")
    assert final.status is ActionStatus.SUCCEEDED
    assert final.callbacks == "failed"
    assert final.error is not None
    assert (final.error.type, final.error.message) == ("RuntimeError", "callback broke")


def test_failing_callback_is_retried(reg: Registry, app: App) -> None:
    """An unhandled error in a callback is retried per the retry policy."""
    attempts: list[float] = []

    def flaky(action: Action, server: Server) -> None:
        attempts.append(app.store.now())
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    reg.action(Server, "job", steps=[_succeed]).after("succeeded")(flaky)
    final = _run(app, "succeeded")
    assert final.callbacks == "ok"
    assert [b - a for a, b in itertools.pairwise(attempts)] == [1, 2]


def test_failing_callback_withholds_achievement(reg: Registry) -> None:
    """A succeeded action whose callback failed grants no achievement: the identical
    action runs again."""
    ran: list[int] = []
    job = reg.action(
        Server, "job", checksum=lambda s: "same", steps=[lambda step, s: ran.append(1)]
    )
    job.after("succeeded")(_boom)
    app = memory_app(reg, handled=(RuntimeError,))
    _run(app, "succeeded")
    assert not [r for k, r in records(app).items() if k[0] == "achievement" and r.achieved]
    again = app.invoke_now(Server(1), "job")
    assert again.outcome == "created"
    assert ran == [1, 1]


def test_failing_callback_fails_parent_step(reg: Registry) -> None:
    """A child whose callback failed counts as unsuccessful: the parent step fails."""
    reg.action(Server, "child", steps=[_succeed]).after("succeeded")(_boom)
    reg.action(Server, "parent", steps=[lambda step, s: step.do("child")])
    app = memory_app(reg, handled=(RuntimeError,))
    root = app.invoke_now(Server(1), "parent")
    drain(app)
    final = app.get(root.id or "")
    assert final.status is ActionStatus.FAILED
    assert final.steps[0].status.value == "failed"
    assert app.get(f"{root.id}.0.0").status is ActionStatus.SUCCEEDED


def test_after_rejects_unknown_status(reg: Registry) -> None:
    """``after`` accepts only succeeded, failed, cancelled, timed_out and ``"all"``."""
    job = reg.action(Server, "job")
    with pytest.raises(DefinitionError):
        job.after("superseded")
