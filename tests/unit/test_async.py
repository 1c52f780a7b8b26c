"""``async def`` user code: step bodies, before hooks, callbacks and jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from actors import Server

from stepkernel import Action, ActionStatus, App, Registry
from stepkernel.testing import drain


def test_async_step_body(reg: Registry, app: App) -> None:
    """An ``async def`` step body is awaited and its fan-out applied."""
    reg.action(Server, "ping", steps=[lambda step, s: None])

    async def body(step: Any, s: Server) -> None:
        await asyncio.sleep(0)
        step.do("ping")
        step.wait(1)

    reg.action(Server, "deploy", steps=[body])
    action = app.invoke_now(Server(1), "deploy")
    assert action.steps[0].dependencies == (f"{action.id}.0.0", f"{action.id}.0.w0")
    drain(app)
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_async_step_body_exception_is_retried(reg: Registry, app: App) -> None:
    """An exception raised by an awaited step body is retried like a sync one."""
    calls: list[int] = []

    async def body(step: Any, s: Server) -> None:
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError("later")

    reg.action(Server, "deploy", steps=[body])
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    assert calls == [1, 1]
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_async_before_hook(reg: Registry, app: App) -> None:
    """An ``async def`` before hook may replace the arguments."""
    seen: list[Any] = []

    async def before(action: Any, s: Server, version: str) -> None:
        await asyncio.sleep(0)
        action.arguments = [version.upper()]

    deploy = reg.action(Server, "deploy", steps=[lambda step, s, v: seen.append(v)])
    deploy.before(before)
    app.invoke_now(Server(1), "deploy", "v1")
    assert seen == ["V1"]


def test_async_before_hook_short_circuits(reg: Registry, app: App) -> None:
    """An ``async def`` before hook may cancel the action."""

    async def before(action: Any, s: Server) -> None:
        action.cancel()

    reg.action(Server, "deploy", steps=[lambda step, s: None]).before(before)
    action = app.invoke_now(Server(1), "deploy")
    assert (action.id, action.status) == (None, ActionStatus.CANCELLED)


def test_async_callback(reg: Registry, app: App) -> None:
    """An ``async def`` after callback runs."""
    ran: list[ActionStatus] = []

    async def done(action: Action, s: Server) -> None:
        await asyncio.sleep(0)
        ran.append(action.status)

    reg.action(Server, "deploy", steps=[lambda step, s: None]).after("succeeded")(done)
    action = app.invoke_now(Server(1), "deploy")
    drain(app)
    assert ran == [ActionStatus.SUCCEEDED]
    assert app.get(action.id or "").callbacks == "ok"


def test_async_job(reg: Registry, app: App) -> None:
    """An ``async def`` job completes its action."""

    async def job(handle: Any) -> None:
        await asyncio.sleep(0)
        handle.complete(payload=handle.arguments[0] * 2)

    reg.action(Server, "backup", job=job)
    action = app.invoke_now(Server(1), "backup", 21)
    drain(app)
    final = app.get(action.id or "")
    assert (final.status, final.output) == (ActionStatus.SUCCEEDED, 42)


def test_async_crash_then_redelivery(reg: Registry, app: App) -> None:
    """A KeyboardInterrupt from an ``async def`` body propagates, and the redelivered
    step runs fine on the same thread afterwards."""
    calls: list[int] = []

    async def body(step: Any, s: Server) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    reg.action(Server, "deploy", steps=[body])
    action = app.invoke_later(Server(1), "deploy")
    with pytest.raises(KeyboardInterrupt):
        drain(app)
    drain(app)
    assert calls == [1, 1]
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_invoke_now_inside_running_loop(reg: Registry, app: App) -> None:
    """``invoke_now`` called from async code still runs ``async def`` bodies."""
    seen: list[int] = []

    async def body(step: Any, s: Server) -> None:
        seen.append(1)

    reg.action(Server, "deploy", steps=[body])

    async def main() -> Action:
        return app.invoke_now(Server(1), "deploy")

    assert asyncio.run(main()).status is ActionStatus.SUCCEEDED
    assert seen == [1]
