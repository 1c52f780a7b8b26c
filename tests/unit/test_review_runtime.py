"""Review of the runtime and the stores under concurrency and failure: racing submitters,
racing workers, leases, stopping, recovery, pruning, and user code that raises.

Every test states the behaviour a demanding user would expect; confirmed bugs are strict
xfails whose reason starts with ``BUG:``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepkernel import ActionStatus, App, Registry, RetryPolicy
from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.adapters.sql import SqlWorkflowStore, sqlite_engine
from stepkernel.domain.messages import Message
from stepkernel.ports.store import ActionQuery, Commit, WorkflowStore
from stepkernel.testing import FakeClock, drain, memory_app

FAST = RetryPolicy(attempts=2, initial_delay=1, multiplier=2, jitter=0)
"""Two runs, retried after 1 s, no jitter."""


class Box:
    """A trivial actor whose key is its id."""

    def __init__(self, id: int) -> None:
        self.id = id


def _load_box(key: str) -> Box:
    return Box(int(key))


def _registry(**actions: dict[str, Any]) -> Registry:
    """A registry with ``Box`` and the actions ``name=dict(options)``."""
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=_load_box)
    for name, options in actions.items():
        reg.action(Box, name, **options)
    return reg


def _noop(step: Any, box: Box) -> None:
    """A step that does nothing."""


def _sqlite(path: Path, clock: FakeClock | None = None) -> SqlWorkflowStore:
    return SqlWorkflowStore(sqlite_engine(path), clock=clock)


@pytest.fixture(params=["memory", "sqlite"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], WorkflowStore]:
    """A factory of stores with a fake clock; SQLite ones share one file."""
    clock = FakeClock()
    if request.param == "memory":
        shared = InMemoryWorkflowStore(clock=clock)
        return lambda: shared
    return lambda: _sqlite(tmp_path / "review.db", clock)


def _worker_threads(worker: Any, name: str) -> list[threading.Thread]:
    return [t for t in [*worker._loops, *worker._helpers] if t.name.startswith(name)]


# -- submitting ----------------------------------------------------------------------------


def test_invoke_later_idempotency_key_race_yields_one_root(
    new_store: Callable[[], WorkflowStore],
) -> None:
    """Two threads submitting with the same idempotency key, both past the existence
    check before either commits, get the same root (one ``created``, one ``exists``),
    no error, and exactly one action and one run message are stored."""
    barrier = threading.Barrier(2, timeout=2)

    def both_inside(action: Any, box: Box) -> None:
        barrier.wait()

    app = App(_registry(job={"steps": [_noop], "before": both_inside}), new_store())
    results: list[Any] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            results.append(app.invoke_later(Box(1), "job", idempotency_key="once"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert errors == []
    assert len({a.id for a in results}) == 1
    assert sorted(a.outcome for a in results) == ["created", "exists"]
    assert len(app.store.find_actions(ActionQuery())) == 1
    assert len(app.store.queued()) == 1


def test_invoke_later_before_hook_error_propagates_and_stores_nothing() -> None:
    """A before hook raising a plain exception reaches the caller of ``invoke_later``
    unchanged (its own code, its own type) and nothing is stored or queued."""

    def refuse(action: Any, box: Box) -> None:
        raise KeyError("no such tenant")

    app = memory_app(_registry(job={"steps": [_noop], "before": refuse}))
    with pytest.raises(KeyError, match="no such tenant"):
        app.invoke_later(Box(1), "job")
    assert app.store.find_actions(ActionQuery()) == []
    assert app.store.queued() == []


def test_invoke_later_resolver_error_propagates_and_stores_nothing() -> None:
    """A concurrency-key resolver raising a non-stepkernel exception on a root reaches
    the caller unchanged and nothing is stored."""

    def broken_key(box: Box) -> str:
        raise RuntimeError("resolver down")

    app = memory_app(_registry(job={"steps": [_noop], "concurrency_key": broken_key}))
    with pytest.raises(RuntimeError, match="resolver down"):
        app.invoke_later(Box(1), "job")
    assert app.store.find_actions(ActionQuery()) == []


def test_run_body_child_resolver_error_follows_retry_policy() -> None:
    """A child's resolver raising a plain exception while its parent step fans out is
    the parent step raising: retried under the policy, then the parent fails with it;
    no child is ever stored."""

    def broken_key(box: Box) -> str:
        raise RuntimeError("resolver down")

    def parent(step: Any, box: Box) -> None:
        step.do("child")

    app = memory_app(
        _registry(
            child={"steps": [_noop], "concurrency_key": broken_key},
            parent={"steps": [parent]},
        ),
        retry=FAST,
    )
    root = app.invoke_now(Box(1), "parent")
    assert root.id is not None
    drain(app)
    done = app.get(root.id)
    assert done.status is ActionStatus.FAILED
    assert done.steps[0].error is not None
    assert done.steps[0].error.type == "RuntimeError"
    assert len(app.store.find_actions(ActionQuery())) == 1


# -- user code raising ---------------------------------------------------------------------


async def _async_raises(step: Any, box: Box) -> None:
    await asyncio.sleep(0)
    raise ValueError("async boom")


def test_run_body_async_raising_is_retried_then_failed() -> None:
    """An ``async def`` body that raises is retried under the policy like a sync one,
    then fails with the exception recorded."""
    app = memory_app(_registry(job={"steps": [_async_raises]}), retry=FAST)
    action = app.invoke_now(Box(1), "job")
    assert action.id is not None
    drain(app)
    done = app.get(action.id)
    assert done.status is ActionStatus.FAILED
    assert done.steps[0].attempt == 1
    assert done.steps[0].error is not None
    assert done.steps[0].error.type == "ValueError"


def test_run_body_async_raising_inside_running_loop_is_recorded() -> None:
    """``invoke_now`` called from async code runs an async body that raises on a helper
    loop; the error is recorded on the step (retry scheduled), not raised at the caller."""
    app = memory_app(_registry(job={"steps": [_async_raises]}), retry=FAST)

    async def caller() -> Any:
        return app.invoke_now(Box(1), "job")

    action = asyncio.run(caller())
    assert action.status is ActionStatus.PERFORMING
    assert action.steps[0].error is not None
    assert action.steps[0].error.type == "ValueError"


def test_run_body_actor_load_error_follows_retry_policy() -> None:
    """An actor ``load`` function raising something other than LookupError/ValueError
    (say the user's database is down) is treated like the step raising: retried under
    the policy, then the step fails with the error recorded.  (After callbacks already
    treat it so.)  It must not escape ``run_pending``/``drain`` and strand the message."""

    def flaky_load(key: str) -> Box:
        raise RuntimeError("actor db down")

    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=flaky_load)
    reg.action(Box, "job", steps=[_noop])
    app = memory_app(reg, retry=FAST)
    action = app.invoke_later(Box(1), "job")
    assert action.id is not None
    drain(app)
    done = app.get(action.id)
    assert done.status is ActionStatus.FAILED
    assert done.steps[0].error is not None
    assert done.steps[0].error.type == "RuntimeError"


# -- handled exceptions across threads ---------------------------------------------------


def test_handling_overlapping_blocks_in_two_threads_keep_each_other() -> None:
    """Two threads in overlapping ``app.handling(ValueError)`` blocks: when one leaves,
    ValueError is still handled for the other until it leaves too."""
    app = memory_app(_registry(job={"steps": [_noop]}))
    entered = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with app.handling(ValueError):
            entered.set()
            leave.wait(2)

    thread = threading.Thread(target=other)
    thread.start()
    assert entered.wait(2)
    with app.handling(ValueError):
        pass
    still = app.engine.is_handled(ValueError("x"))
    leave.set()
    thread.join(2)
    assert still
    assert not app.engine.is_handled(ValueError("x"))


def test_handling_is_app_wide_and_reaches_worker_threads() -> None:
    """``app.handling`` is app-wide, not per thread: a worker thread running a body while
    another thread is inside the block fails the step at once (documented as the app's
    handled set; surprising for request-scoped use)."""
    inside = threading.Event()

    def raises(step: Any, box: Box) -> None:
        assert inside.is_set()
        raise ValueError("bad input")

    app = App(_registry(job={"steps": [raises]}), InMemoryWorkflowStore(), retry=FAST)
    action = app.invoke_later(Box(1), "job")
    assert action.id is not None
    with app.handling(ValueError):
        inside.set()
        with app.worker(threads=1, poll=0.01, recover_every=None) as worker:
            assert worker.wait_idle(timeout=5)
    assert app.get(action.id).status is ActionStatus.FAILED


# -- stale views and conflicts -------------------------------------------------------------


def test_run_step_outcome_is_stale_when_action_cancelled_while_body_runs() -> None:
    """A body whose action is cancelled while it runs: its outcome (decided first on the
    view loaded before the body) conflicts, is re-decided on fresh records as stale,
    and its message is acknowledged; no child is created and nothing else is queued."""
    holder: dict[str, App] = {}

    def fan_and_cancel(step: Any, box: Box) -> None:
        holder["app"].cancel(step.action_id, "changed my mind")
        step.on([Box(2), Box(3)], "leaf")

    app = memory_app(
        _registry(parent={"steps": [fan_and_cancel]}, leaf={"steps": [_noop]}), retry=FAST
    )
    holder["app"] = app
    action = app.invoke_later(Box(1), "parent")
    assert action.id is not None
    app.run_pending()
    assert app.get(action.id).status is ActionStatus.CANCELLED
    assert [a.id for a in app.find(ActionQuery())] == [action.id]
    drain(app)
    assert app.store.queued() == []


# -- leases --------------------------------------------------------------------------------


def test_release_by_non_owner_keeps_the_lease(new_store: Callable[[], WorkflowStore]) -> None:
    """``release`` by a worker that does not hold the lease changes nothing: the message
    stays leased to its owner."""
    store = new_store()
    store.commit(Commit(enqueue=(Message.run("a", 0, 0, store.now()),)))
    assert len(store.lease(worker="owner", limit=1, lease_seconds=10)) == 1
    store.release(["run:a:0:0"], worker="intruder")
    assert store.lease(worker="intruder", limit=1, lease_seconds=10) == []


def test_extend_after_expiry_and_release_by_previous_owner_is_noop(
    new_store: Callable[[], WorkflowStore],
) -> None:
    """Once a lease expired and another worker leased the message, the previous owner's
    ``extend`` and ``release`` leave the new lease alone."""
    store = new_store()
    clock = store.clock
    assert isinstance(clock, FakeClock)
    store.commit(Commit(enqueue=(Message.run("a", 0, 0, store.now()),)))
    store.lease(worker="old", limit=1, lease_seconds=10)
    clock.advance(11)
    (again,) = store.lease(worker="new", limit=1, lease_seconds=10)
    assert again.deliveries == 2
    store.extend(["run:a:0:0"], worker="old", lease_seconds=100)
    store.release(["run:a:0:0"], worker="old")
    assert store.lease(worker="third", limit=1, lease_seconds=10) == []
    assert store.next_due() == pytest.approx(store.now() + 10)


def test_lease_by_ids_skips_a_delayed_message(new_store: Callable[[], WorkflowStore]) -> None:
    """Leasing by ids does not hand out a message whose ``available_at`` is still ahead."""
    store = new_store()
    store.commit(Commit(enqueue=(Message.run("b", 0, 0, store.now() + 100),)))
    assert store.lease(worker="w", limit=5, lease_seconds=10, ids=["run:b:0:0"]) == []


# -- recovery and pruning ------------------------------------------------------------------


def test_recover_does_not_duplicate_a_leased_run_message(
    new_store: Callable[[], WorkflowStore],
) -> None:
    """A step whose run message is leased (in hand, not merely queued) has its wake-up:
    the recovery sweep enqueues nothing for it."""
    app = App(_registry(job={"steps": [_noop]}), new_store())
    action = app.invoke_later(Box(1), "job")
    assert action.id is not None
    (held,) = app.store.lease(worker="busy", limit=1, lease_seconds=60)
    assert held.message.action_id == action.id
    assert app.recover() == 0
    assert [m.id for m in app.store.queued()] == [held.message.id]


def test_prune_skips_tree_with_child_in_flight_then_deletes_it_once_settled() -> None:
    """A cancelled root whose children are still being cancelled (messages queued) is
    finished but not prunable; once the late cancellations settle, prune deletes the
    whole tree and nothing refers to it afterwards."""

    def fan(step: Any, box: Box) -> None:
        step.on([Box(2), Box(3)], "hold")

    def hold(step: Any, box: Box) -> None:
        step.wait(1000)

    app = memory_app(_registry(parent={"steps": [fan]}, hold={"steps": [hold]}))
    root = app.invoke_now(Box(1), "parent")
    assert root.id is not None
    app.run_pending()
    app.cancel(root.id)
    assert app.get(root.id).status is ActionStatus.CANCELLED
    assert app.prune(older_than=0) == 0
    drain(app)
    tree = app.store.find_actions(ActionQuery(root_id=root.id))
    assert {r.status for r in tree} == {ActionStatus.CANCELLED}
    assert app.prune(older_than=0) == 3
    assert app.store.find_actions(ActionQuery()) == []
    drain(app)
    assert app.store.queued() == []


# -- workers -------------------------------------------------------------------------------


class _ExtendLog(InMemoryWorkflowStore):
    """An in-memory store that signals every lease extension of a given message."""

    def __init__(self, *, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.watched = ""
        self.extended = threading.Event()

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        ids = list(ids)
        super().extend(ids, worker=worker, lease_seconds=lease_seconds)
        if self.watched in ids:
            self.extended.set()


def test_worker_stop_keeps_the_lease_of_the_message_in_hand() -> None:
    """``Worker.stop()`` lets each thread finish the message in hand; until it does, the
    heartbeat keeps extending that message's lease (as the class promises), so no other
    worker gets it while the body is still running."""
    started = threading.Event()
    finish = threading.Event()

    def slow(step: Any, box: Box) -> None:
        started.set()
        finish.wait(5)

    store = _ExtendLog(clock=FakeClock())
    app = App(_registry(job={"steps": [slow]}), store)
    action = app.invoke_later(Box(1), "job")
    assert action.id is not None
    store.watched = Message.run(action.id, 0, 0, 0.0).id
    worker = app.worker(threads=1, poll=0.01, lease_seconds=0.15, recover_every=None)
    worker.start()
    stopper = threading.Thread(target=worker.stop)
    try:
        assert started.wait(2)
        stopper.start()
        (beat,) = _worker_threads(worker, "stepkernel-heartbeat")
        beat.join(0.5)  # with the bug it has exited; fixed, it outlives the body
        store.extended.clear()
        kept_alive = store.extended.wait(1)
    finally:
        finish.set()
        stopper.join(5)
    assert kept_alive


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_worker_thread_killed_by_system_exit_stops_holding_its_lease() -> None:
    """A body calling ``sys.exit()`` inside a worker thread ends that thread; its
    message must then behave like a dead worker's: no more lease extensions, so it is
    redelivered once the lease runs out (and ``wait_idle`` is not blocked forever)."""

    def exits(step: Any, box: Box) -> None:
        sys.exit(3)

    store = _ExtendLog(clock=FakeClock())
    app = App(_registry(job={"steps": [exits]}), store)
    action = app.invoke_later(Box(1), "job")
    assert action.id is not None
    store.watched = Message.run(action.id, 0, 0, 0.0).id
    worker = app.worker(threads=1, poll=0.01, lease_seconds=0.15, recover_every=None)
    worker.start()
    try:
        (loop,) = _worker_threads(worker, "stepkernel-0")
        loop.join(2)
        assert not loop.is_alive()
        store.extended.clear()
        extended_after_death = store.extended.wait(0.5)
    finally:
        worker.stop(2)
    assert not extended_after_death


def test_worker_stop_releases_the_unstarted_rest_of_its_batch() -> None:
    """Stopping while the first message of a leased batch runs: that message is finished
    and acknowledged, the rest of the batch is released and deliverable at once."""
    started = threading.Event()
    finish = threading.Event()

    def slow(step: Any, box: Box) -> None:
        started.set()
        finish.wait(5)

    clock = FakeClock()
    app = App(_registry(job={"steps": [slow]}), InMemoryWorkflowStore(clock=clock))
    ids = [app.invoke_later(Box(i), "job").id for i in range(3)]
    worker = app.worker(threads=1, batch=3, poll=0.01, lease_seconds=300.0, recover_every=None)
    worker.start()
    assert started.wait(2)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    finish.set()
    stopper.join(5)
    assert not stopper.is_alive()
    rest = app.store.lease(worker="other", limit=10, lease_seconds=10)
    assert len(rest) == 2
    finished = [i for i in ids if i is not None and app.get(i).status is ActionStatus.SUCCEEDED]
    assert len(finished) == 1


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("restore_sigterm")
def test_run_forever_sigterm_finishes_body_and_restores_handler() -> None:
    """SIGTERM under ``run_forever`` while a body runs: the body finishes and its step is
    committed (message acknowledged, not redelivered), the threads stop, and the
    previous SIGTERM handler is back."""
    started = threading.Event()
    finish = threading.Event()

    def slow(step: Any, box: Box) -> None:
        started.set()
        finish.wait(5)

    def sentinel(_signum: int, _frame: Any) -> None:
        """The handler installed before ``run_forever``."""

    signal.signal(signal.SIGTERM, sentinel)
    app = App(_registry(job={"steps": [slow]}), InMemoryWorkflowStore())
    action = app.invoke_later(Box(1), "job")
    assert action.id is not None
    worker = app.worker(threads=1, poll=0.01, recover_every=None)

    def ready() -> None:
        assert started.wait(2)
        os.kill(os.getpid(), signal.SIGTERM)
        finish.set()

    worker.run_forever(ready=ready)
    assert signal.getsignal(signal.SIGTERM) is sentinel
    assert app.get(action.id).status is ActionStatus.SUCCEEDED
    assert app.store.queued() == []


# -- fan-out under real concurrency --------------------------------------------------------


def test_sqlite_four_threads_fan_out_settles_every_child_once(tmp_path: Path) -> None:
    """Two apps on one SQLite file, two worker threads each, running 12 parents that fan
    out 6 children each: every step body's outcome is applied once, every child
    succeeds, every parent succeeds, and the queue ends empty."""
    runs: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def count(step: Any, box: Box) -> None:
        with lock:
            runs[(step.action_id, step.index)] += 1

    def fan(step: Any, box: Box) -> None:
        count(step, box)
        step.on([Box(box.id * 100 + i) for i in range(6)], "leaf")

    def make_app() -> App:
        reg = _registry(fan={"steps": [fan, count]}, leaf={"steps": [count]})
        return App(reg, _sqlite(tmp_path / "fan.db"))

    first, second = make_app(), make_app()
    roots = [first.invoke_later(Box(i), "fan").id for i in range(1, 13)]
    with (
        first.worker(threads=2, poll=0.01, recover_every=None) as a,
        second.worker(threads=2, poll=0.01, recover_every=None) as b,
    ):
        assert a.wait_idle(timeout=30)
        assert b.wait_idle(timeout=30)
    assert a.errors == b.errors == 0
    every = first.store.find_actions(ActionQuery())
    assert len(every) == 12 * 7
    assert {r.status for r in every} == {ActionStatus.SUCCEEDED}
    assert {r for r in roots if r is not None} == {r.id for r in every if r.parent is None}
    assert len(runs) == 12 * 2 + 12 * 6
    assert set(runs.values()) == {1}
    assert first.store.queued() == []
