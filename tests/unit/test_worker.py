"""Workers: thread pools leasing messages, on the in-memory store and on SQLite."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stepkernel import ActionStatus, App, Registry
from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.errors import StoreUnavailableError
from stepkernel.ports.store import ActionQuery, WorkflowStore
from stepkernel.testing import FakeClock
from stepkernel.testing.proxy import StoreProxy


class Box:
    """A trivial actor whose key is its id."""

    def __init__(self, id: int) -> None:
        self.id = id


RUNS: Counter[tuple[str, int]] = Counter()
_runs_lock = threading.Lock()


def _count(step: Any, box: Box) -> None:
    with _runs_lock:
        RUNS[(step.action_id, step.index)] += 1


def _fan(step: Any, box: Box) -> None:
    _count(step, box)
    step.on([Box(box.id * 100 + i) for i in range(5)], "leaf")


def registry() -> Registry:
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=lambda k: Box(int(k)))
    reg.action(Box, "three", steps=[_count, _count, _count])
    reg.action(Box, "fan", steps=[_fan, _count])
    reg.action(Box, "leaf", steps=[_count])
    return reg


def sqlite_store(path: Path) -> WorkflowStore:
    from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine

    return SqlWorkflowStore(sqlite_engine(path))


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], WorkflowStore]:
    """Store factories; the SQLite ones share one database file."""
    if request.param == "memory":
        shared = InMemoryWorkflowStore()
        return lambda: shared
    return lambda: sqlite_store(tmp_path / "worker.db")


def _unfinished(store: WorkflowStore) -> list[Any]:
    return store.find_actions(
        ActionQuery(statuses=frozenset({ActionStatus.PENDING, ActionStatus.PERFORMING}))
    )


def test_worker_runs_every_root_to_success(make_store: Callable[[], WorkflowStore]) -> None:
    """A 2-thread worker drives sequential and fan-out roots to success, each step's
    outcome applied once."""
    RUNS.clear()
    app = App(registry(), make_store())
    roots = [app.invoke_later(Box(i), "three").id for i in range(20)]
    roots += [app.invoke_later(Box(1000 + i), "fan").id for i in range(5)]
    with app.worker(threads=2, poll=0.01) as worker:
        assert worker.wait_idle(timeout=30)
    assert not _unfinished(app.store)
    for root in roots:
        assert root is not None
        assert app.get(root).status is ActionStatus.SUCCEEDED
    assert len(app.store.find_actions(ActionQuery())) == 20 + 5 + 25
    assert all(count == 1 for count in RUNS.values())


def test_two_workers_on_one_store_share_the_work(
    make_store: Callable[[], WorkflowStore],
) -> None:
    """Two apps (two store connections to one database) with a worker each finish every
    root exactly once between them."""
    RUNS.clear()
    first = App(registry(), make_store())
    second = App(registry(), make_store())
    roots = [first.invoke_later(Box(i), "three").id for i in range(30)]
    with first.worker(threads=1, poll=0.01) as a, second.worker(threads=1, poll=0.01) as b:
        assert a.wait_idle(timeout=30)
        assert b.wait_idle(timeout=30)
    assert a.processed + b.processed >= 90
    for root in roots:
        assert root is not None
        assert second.get(root).status is ActionStatus.SUCCEEDED
    assert sum(RUNS.values()) == 90


def test_stop_gives_back_unstarted_leases() -> None:
    """Stopping a worker releases the leases of messages it had not started, so another
    worker gets them at once instead of after the lease expires."""
    clock = FakeClock()
    store = InMemoryWorkflowStore(clock=clock)
    app = App(registry(), store, lease_seconds=300)
    for i in range(10):
        app.invoke_later(Box(i), "three")
    leased = store.lease(worker="w", limit=10, lease_seconds=300)
    assert len(leased) == 10
    assert store.lease(worker="other", limit=10, lease_seconds=300) == []
    store.release([d.message.id for d in leased], worker="w")
    assert len(store.lease(worker="other", limit=10, lease_seconds=300)) == 10


def test_a_dead_workers_message_is_redelivered_after_its_lease() -> None:
    """A worker that leased a message and died (never acknowledged it) loses it when its
    lease expires; another worker then runs the step."""
    clock = FakeClock()
    store = InMemoryWorkflowStore(clock=clock)
    app = App(registry(), store, lease_seconds=30)
    root = app.invoke_later(Box(1), "three").id
    assert root is not None
    (dead,) = store.lease(worker="dead", limit=1, lease_seconds=30)
    assert app.run_pending() == 0
    clock.advance(31)
    assert app.run_pending() == 3
    assert app.get(root).status is ActionStatus.SUCCEEDED
    assert dead.deliveries == 1


def test_invoke_now_keeps_its_lease_while_a_long_body_runs() -> None:
    """``invoke_now`` extends the lease of the step it runs inline, so another worker
    cannot take that step while the body is still running."""
    started = threading.Event()
    release = threading.Event()

    def long_body(step: Any, box: Box) -> None:
        started.set()
        assert release.wait(10)

    reg = registry()
    reg.action(Box, "long", steps=[long_body])
    store = InMemoryWorkflowStore()
    app = App(reg, store, lease_seconds=0.3)
    runner = threading.Thread(target=app.invoke_now, args=(Box(1), "long"))
    runner.start()
    assert started.wait(10)
    deadline = time.monotonic() + 1.0  # three lease lengths
    stolen = []
    while time.monotonic() < deadline:
        stolen += store.lease(worker="other", limit=1, lease_seconds=0.3)
        time.sleep(0.05)
    release.set()
    runner.join(10)
    assert stolen == []


def _runs_to_the_end(app: App, failure: str) -> None:
    """Submit a three-step root and wait (at most 10 s) until the running worker has
    finished it; *failure* says what it means if it does not."""
    root = app.invoke_later(Box(1), "three").id
    assert root is not None
    deadline = time.monotonic() + 10
    while app.get(root).status is not ActionStatus.SUCCEEDED:
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


class _FailsOnceWhenIdle(StoreProxy):
    """Forwards to *inner*; the first call of *operation* (an idle worker's
    ``next_due`` or ``wait_for_work``) raises :class:`StoreUnavailableError`, as after
    a killed database backend, and sets ``failed``."""

    def __init__(self, inner: WorkflowStore, operation: str) -> None:
        super().__init__(inner)
        self.operation = operation
        self.failed = threading.Event()

    def _maybe_fail(self, operation: str) -> None:
        if operation == self.operation and not self.failed.is_set():
            self.failed.set()
            raise StoreUnavailableError("backend terminated", operation=operation)

    def next_due(self) -> float | None:
        self._maybe_fail("next_due")
        return self.inner.next_due()

    def wait_for_work(self, timeout: float) -> None:
        self._maybe_fail("wait_for_work")
        self.inner.wait_for_work(timeout)


@pytest.mark.parametrize("operation", ["next_due", "wait_for_work"])
def test_a_store_error_while_idle_does_not_end_the_worker_thread(operation: str) -> None:
    """A store call of an idle worker thread that fails (the store was unavailable for a
    moment) is retried: the worker's only thread lives on and runs work enqueued
    afterwards, instead of dying and leaving a live process that leases nothing."""
    store = _FailsOnceWhenIdle(InMemoryWorkflowStore(), operation)
    app = App(registry(), store)
    with app.worker(threads=1, poll=0.01, recover_every=None):
        assert store.failed.wait(10)
        _runs_to_the_end(app, "the worker thread stopped leasing")


class _DataLost(StoreProxy):
    """Forwards to *inner*, but every ``lease`` raises a non-retryable
    :class:`StoreUnavailableError` (as a Redis that restarted empty does) until
    ``restored`` is set; ``leases`` counts the attempts."""

    def __init__(self, inner: WorkflowStore) -> None:
        super().__init__(inner)
        self.restored = threading.Event()
        self.leases = 0

    def lease(self, **kwargs: Any) -> Any:
        self.leases += 1
        if not self.restored.is_set():
            error = StoreUnavailableError("the data is gone", operation="lease")
            error.retryable = False
            raise error
        return self.inner.lease(**kwargs)


def test_a_failing_store_is_retried_with_backoff_and_work_resumes() -> None:
    """While the store keeps failing, a worker thread backs off (poll, doubling; up to
    30 s when the error is not retryable) instead of hammering it and the logs every
    ``poll``; once the store is back, the same thread leases and runs work again."""
    store = _DataLost(InMemoryWorkflowStore())
    app = App(registry(), store)
    with app.worker(threads=1, poll=0.01, recover_every=None):
        time.sleep(0.6)
        # Without backoff: ~60 attempts in 0.6 s; with it: 0.01, 0.02, 0.04 ... -> ~6.
        assert 2 <= store.leases <= 10
        store.restored.set()
        _runs_to_the_end(app, "the worker thread never leased again")
