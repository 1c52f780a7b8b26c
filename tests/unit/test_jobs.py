"""Job-backed actions: ``job=fn`` receives a handle and completes the action."""

from __future__ import annotations

from typing import Any

from actors import Server

from stepkernel import ActionStatus, App, Registry, RetryPolicy
from stepkernel.testing import drain


def test_job_gets_handle_and_completes(reg: Registry, app: App) -> None:
    """The job gets a handle with the actor and arguments; ``complete(payload)``
    succeeds the action with that output."""
    seen: list[Any] = []

    def job(handle: Any) -> None:
        seen.append((handle.actor.id, handle.arguments, handle.name))
        handle.complete(payload={"done": True})

    reg.action(Server, "backup", job=job)
    action = app.invoke_later(Server(3), "backup", "db", 2)
    drain(app)
    final = app.get(action.id or "")
    assert seen == [(3, ("db", 2), "backup")]
    assert (final.status, final.output) == (ActionStatus.SUCCEEDED, {"done": True})


def test_job_without_complete_waits(reg: Registry, app: App) -> None:
    """A job that does not complete leaves the action waiting for an outside completion."""
    reg.action(Server, "backup", job=lambda handle: None)
    action = app.invoke_now(Server(1), "backup")
    assert (action.status, action.awaiting_completion) == (ActionStatus.PERFORMING, True)
    assert app.complete(action.id or "").status is ActionStatus.SUCCEEDED


def test_job_complete_as_failed(reg: Registry, app: App) -> None:
    """``handle.complete("failed")`` fails the action."""
    reg.action(Server, "backup", job=lambda handle: handle.complete("failed"))
    action = app.invoke_now(Server(1), "backup")
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.FAILED


def test_job_retried_when_it_raises(reg: Registry, app: App) -> None:
    """A job that raises is retried per the retry policy until it completes."""
    attempts: list[int] = []

    def job(handle: Any) -> None:
        attempts.append(handle.attempt)
        if len(attempts) < 3:
            raise ConnectionError("flaky")
        handle.complete()

    reg.action(Server, "backup", job=job)
    action = app.invoke_now(Server(1), "backup")
    drain(app)
    assert attempts == [0, 1, 2]
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_job_fails_after_last_attempt(reg: Registry, app: App) -> None:
    """A job that keeps raising fails the action after the policy's last attempt."""
    attempts: list[int] = []

    def job(handle: Any) -> None:
        attempts.append(handle.attempt)
        raise ConnectionError("down")

    reg.action(Server, "backup", job=job, retry=RetryPolicy(attempts=2, jitter=0))
    action = app.invoke_now(Server(1), "backup")
    drain(app)
    final = app.get(action.id or "")
    assert attempts == [0, 1]
    assert final.status is ActionStatus.FAILED
    assert final.error is not None
    assert final.error.type == "ConnectionError"
