"""Errors in user code: handled types fail at once, others are retried with backoff,
crashes (KeyboardInterrupt, SystemExit) propagate and are redelivered."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from actors import FAST_RETRY, Server, clock_of

from stepkernel import ActionStatus, App, Registry, RetryPolicy, StepStatus
from stepkernel.testing import drain, handle_exceptions, memory_app


def _raising(reg: Registry, exc: BaseException, calls: list[float], app_ref: list[App]) -> None:
    def body(step: Any, s: Server) -> None:
        calls.append(app_ref[0].store.now())
        raise exc

    reg.action(Server, "job", steps=[body])


def _setup(reg: Registry, exc: BaseException, **options: Any) -> tuple[App, list[float]]:
    calls: list[float] = []
    holder: list[App] = []
    _raising(reg, exc, calls, holder)
    app = memory_app(reg, retry=FAST_RETRY, **options)
    holder.append(app)
    return app, calls


def test_handled_exception_fails_at_once(reg: Registry) -> None:
    """``App(handled=...)``: a handled exception fails the step and action at once,
    recording type, message and traceback."""
    app, calls = _setup(reg, ValueError("bad version"), handled=(ValueError,))
    action = app.invoke_now(Server(1), "job")
    drain(app)
    final = app.get(action.id or "")
    assert final.status is ActionStatus.FAILED
    assert len(calls) == 1
    error = final.steps[0].error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "bad version")
    assert "raise exc" in error.traceback
    assert final.error == error


def test_handling_context_manager(reg: Registry) -> None:
    """Within ``with app.handling(E)``, E fails the step at once instead of retrying."""
    app, calls = _setup(reg, ValueError("nope"))
    with app.handling(ValueError):
        action = app.invoke_now(Server(1), "job")
        drain(app)
    assert app.get(action.id or "").status is ActionStatus.FAILED
    assert len(calls) == 1


def test_handling_ends_with_block(reg: Registry) -> None:
    """After the ``handling`` block, the exception type is retried again."""
    app, calls = _setup(reg, ValueError("nope"))
    with app.handling(ValueError):
        pass
    app.invoke_now(Server(1), "job")
    drain(app)
    assert len(calls) == 3


def test_handle_exceptions_helper(reg: Registry) -> None:
    """``testing.handle_exceptions(app, E)`` makes E handled within the block."""
    app, calls = _setup(reg, KeyError("k"))
    with handle_exceptions(app, KeyError):
        action = app.invoke_now(Server(1), "job")
        drain(app)
    assert app.get(action.id or "").status is ActionStatus.FAILED
    assert len(calls) == 1


def test_unhandled_exception_retried_with_backoff(reg: Registry) -> None:
    """An unhandled exception is retried per RetryPolicy: 3 attempts, 1s then 2s apart."""
    app, calls = _setup(reg, RuntimeError("flaky"))
    app.invoke_now(Server(1), "job")
    drain(app)
    assert len(calls) == 3
    assert [b - a for a, b in itertools.pairwise(calls)] == [1, 2]


def test_retry_waits_for_its_delay(reg: Registry) -> None:
    """A retry is not run before its delay has passed."""
    app, calls = _setup(reg, RuntimeError("flaky"))
    action = app.invoke_now(Server(1), "job")
    clock_of(app).advance(0.9)
    app.run_pending()
    assert len(calls) == 1
    assert app.get(action.id or "").steps[0].attempt == 1


def test_last_attempt_fails_step_with_error(reg: Registry) -> None:
    """After the last attempt the step fails with the error recorded."""
    app, _calls = _setup(reg, RuntimeError("flaky"))
    action = app.invoke_now(Server(1), "job")
    drain(app)
    final = app.get(action.id or "")
    step = final.steps[0]
    assert (final.status, step.status, step.attempt) == (ActionStatus.FAILED, StepStatus.FAILED, 2)
    assert step.error is not None
    assert (step.error.type, step.error.message) == ("RuntimeError", "flaky")


def test_action_retry_policy_overrides_app(reg: Registry, app: App) -> None:
    """An action's own ``retry=`` policy wins over the app's."""
    calls: list[int] = []

    def body(step: Any, s: Server) -> None:
        calls.append(1)
        raise RuntimeError("x")

    reg.action(Server, "job", steps=[body], retry=RetryPolicy(attempts=1))
    app.invoke_now(Server(1), "job")
    drain(app)
    assert calls == [1]


def test_failed_action_releases_lane(reg: Registry, app: App) -> None:
    """A failed action releases its lane: the next queued action starts."""
    reg.action(
        Server,
        "bad",
        concurrency_key=lambda s: "L",
        steps=[lambda step, s: step.wait(1), lambda step, s: step.fail("no")],
    )
    reg.action(Server, "next", concurrency_key=lambda s: "L", steps=[lambda step, s: None])
    bad = app.invoke_now(Server(1), "bad")
    queued = app.invoke_now(Server(2), "next")
    assert queued.status is ActionStatus.PENDING
    drain(app)
    assert app.get(bad.id or "").status is ActionStatus.FAILED
    assert app.get(queued.id or "").status is ActionStatus.SUCCEEDED


@pytest.mark.parametrize("crash", [KeyboardInterrupt, SystemExit])
def test_crash_propagates_without_failing(reg: Registry, crash: type[BaseException]) -> None:
    """KeyboardInterrupt/SystemExit from a step propagate out of drain; the action is
    not marked failed."""
    app, calls = _setup(reg, crash())
    action = app.invoke_later(Server(1), "job")
    with pytest.raises(crash):
        drain(app)
    final = app.get(action.id or "")
    assert final.status is ActionStatus.PERFORMING
    assert final.steps[0].status is StepStatus.PENDING
    assert final.error is None
    assert len(calls) == 1


def test_crash_redelivered_after_lease(reg: Registry, app: App) -> None:
    """After a crash the step's message is redelivered once its lease expires, and the
    step runs again."""
    calls: list[int] = []

    def body(step: Any, s: Server) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    reg.action(Server, "job", steps=[body])
    action = app.invoke_later(Server(1), "job")
    with pytest.raises(KeyboardInterrupt):
        drain(app)
    assert app.run_pending() == 0
    clock_of(app).advance(app.lease_seconds + 1)
    app.run_pending()
    assert calls == [1, 1]
    assert app.get(action.id or "").status is ActionStatus.SUCCEEDED


def test_crash_in_invoke_now_propagates(reg: Registry, app: App) -> None:
    """A KeyboardInterrupt in a step run inline propagates out of ``invoke_now``."""
    reg.action(Server, "job", steps=[lambda step, s: (_ for _ in ()).throw(KeyboardInterrupt)])
    with pytest.raises(KeyboardInterrupt):
        app.invoke_now(Server(1), "job")
    (action,) = app.unfinished()
    assert action.status is ActionStatus.PERFORMING


def test_crash_in_callback_propagates_and_is_redelivered(reg: Registry, app: App) -> None:
    """A KeyboardInterrupt in an after callback propagates; the callbacks stay pending
    and run again after the lease expires."""
    calls: list[int] = []

    def callback(action: Any, s: Server) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    reg.action(Server, "job", steps=[lambda step, s: None]).after("succeeded")(callback)
    action = app.invoke_now(Server(1), "job")
    with pytest.raises(KeyboardInterrupt):
        drain(app)
    assert app.get(action.id or "").callbacks == "pending"
    drain(app)
    assert calls == [1, 1]
    assert app.get(action.id or "").callbacks == "ok"
