"""Exercises the public API under ``mypy --strict`` without running it (``make typecheck``).

If a signature regresses (a decorator loses the function's type, a verb's return type
widens to Any), this file stops type-checking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_type

import attrs

from stepkernel import (
    Action,
    ActionDefinition,
    ActionStatus,
    ActionTree,
    App,
    Registry,
    RetryPolicy,
    Worker,
    checksum,
    open_app,
)
from stepkernel.runtime.handles import BeforeHandle, JobHandle, StepHandle
from stepkernel.testing import FakeClock, drain, memory_app

registry = Registry()


@registry.actor(key=lambda s: s.id, load=lambda key: Server(int(key)))
@attrs.define
class Server:
    id: int

    def ping(self, n: int) -> int:
        return n


deploy = registry.action(Server, "deploy", timeout=60, retry=RetryPolicy(attempts=3))
assert_type(deploy, ActionDefinition)


@deploy.step
def provision(step: StepHandle, server: Server, version: str) -> None:
    step.do("ping", 1)
    step.on([Server(2), None], "ping", 2)
    step.wait(5.0)


_keeps_signature: Callable[[StepHandle, Server, str], None] = provision


@deploy.step(name="verify")
async def verify(step: StepHandle, server: Server, version: str) -> None:
    if not version:
        step.fail("no version")


@deploy.before
def check(action: BeforeHandle, server: Server, version: str) -> None:
    action.arguments = [version.strip()]


@deploy.after("succeeded", "failed")
def notify(action: Action, server: Server, version: str) -> None:
    assert_type(action.status, ActionStatus)


def tow(job: JobHandle) -> None:
    job.complete("succeeded", {"ok": True})


registry.action(Server, "ping")
registry.action(Server, "tow", job=tow)

app: App = memory_app(registry, clock=FakeClock())
action = app.invoke_now(Server(1), "deploy", "v1")
assert_type(action, Action)
assert_type(action.id, str | None)
assert_type(app.invoke_later(Server(1), "deploy", "v2", idempotency_key="k"), Action)
assert_type(drain(app), int)
assert_type(app.tree(action.id or ""), ActionTree)
assert_type(app.complete("x", "succeeded", {"a": 1}), Action)
assert_type(app.cancel("x"), Action)
assert_type(checksum(["a"]), str | None)
worker: Worker = app.worker(threads=2)
other: App = open_app(registry, "memory://")
