"""Idle workers on PostgreSQL wait for ``NOTIFY`` instead of polling: a commit that
enqueues (or a ``release``) wakes a store waiting in ``wait_for_work`` on another engine
at once; a rolled-back commit wakes nobody."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from test_postgres_store import dispose, open_store

from stepkernel.adapters.sql import SqlWorkflowStore, server_engine
from stepkernel.domain.errors import ConflictError
from stepkernel.ports.clock import SystemClock
from stepkernel.ports.store import Commit
from stepkernel.testing.contract import achievement, bump
from stepkernel.testing.contract_support import queued_message

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
"""How long the waiting store would sleep if nothing woke it."""


@pytest.fixture
def pair(postgres_url: str) -> Iterator[tuple[SqlWorkflowStore, SqlWorkflowStore]]:
    """A waiting store and a committing one, on two engines ("machines")."""
    waiter = open_store(postgres_url)
    committer = SqlWorkflowStore(server_engine(postgres_url, pool_size=2))
    waiter.wait_for_work(0.01)  # opens the listening connection
    try:
        yield waiter, committer
    finally:
        dispose(waiter)
        dispose(committer)


def waited(store: SqlWorkflowStore, timeout: float, during: threading.Thread) -> float:
    """Seconds ``store.wait_for_work(timeout)`` took while *during* ran beside it."""
    started = time.monotonic()
    during.start()
    store.wait_for_work(timeout)
    elapsed = time.monotonic() - started
    during.join(10)
    return elapsed


def later(action: Callable[[], object], delay: float = 0.2) -> threading.Thread:
    """A thread that runs *action* after *delay* seconds."""

    def run() -> None:
        time.sleep(delay)
        action()

    return threading.Thread(target=run)


def test_enqueueing_commit_wakes_a_waiting_store(
    pair: tuple[SqlWorkflowStore, SqlWorkflowStore],
) -> None:
    """A store waiting for work returns within well under the timeout once another
    engine commits a message (about the 0.2 s the commit came after)."""
    waiter, committer = pair
    message = queued_message("m1", at=SystemClock().now())
    elapsed = waited(waiter, TIMEOUT, later(lambda: committer.commit(Commit(enqueue=[message]))))
    assert 0.15 < elapsed < 1.5
    assert [d.message.id for d in waiter.lease(worker="w", limit=5, lease_seconds=30)] == ["m1"]


def test_release_wakes_a_waiting_store(
    pair: tuple[SqlWorkflowStore, SqlWorkflowStore],
) -> None:
    """Giving leases back (graceful shutdown) wakes waiting stores: the messages are
    deliverable at once."""
    waiter, committer = pair
    committer.commit(Commit(enqueue=[queued_message("m1", at=SystemClock().now())]))
    committer.lease(worker="old", limit=1, lease_seconds=300)
    waiter.wait_for_work(0.05)  # consume the enqueue's notification
    elapsed = waited(waiter, TIMEOUT, later(lambda: committer.release(["m1"], worker="old")))
    assert elapsed < 1.5


def test_commit_between_lease_and_wait_is_not_missed(
    pair: tuple[SqlWorkflowStore, SqlWorkflowStore],
) -> None:
    """A notification that arrives after the worker found the queue empty but before it
    waits is kept by the listening connection: the wait returns at once."""
    waiter, committer = pair
    assert waiter.lease(worker="w", limit=5, lease_seconds=30) == []
    committer.commit(Commit(enqueue=[queued_message("m1", at=SystemClock().now())]))
    time.sleep(0.1)  # the notification is on the listening connection by now
    started = time.monotonic()
    waiter.wait_for_work(TIMEOUT)
    assert time.monotonic() - started < 0.5


def test_rolled_back_commit_wakes_nobody(
    pair: tuple[SqlWorkflowStore, SqlWorkflowStore],
) -> None:
    """``NOTIFY`` runs in the commit's transaction: a commit that conflicts (rolled
    back, nothing enqueued) notifies no one, and commits without messages neither."""
    waiter, committer = pair
    base = achievement("k1")
    committer.commit(Commit(writes=[base]))
    waiter.wait_for_work(0.05)

    def conflicting() -> None:
        stale = bump(bump(base))
        with pytest.raises(ConflictError):
            committer.commit(
                Commit(writes=[stale], enqueue=[queued_message("m1", at=SystemClock().now())])
            )
        committer.commit(Commit(writes=[bump(base)]))

    elapsed = waited(waiter, 0.8, later(conflicting, 0.1))
    assert elapsed >= 0.75
    assert committer.queued() == []


def test_threads_of_one_store_all_wake(
    pair: tuple[SqlWorkflowStore, SqlWorkflowStore],
) -> None:
    """Several threads waiting on one store share its listening connection; one commit
    wakes every one of them."""
    waiter, committer = pair
    woke: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()

    def wait() -> None:
        waiter.wait_for_work(TIMEOUT)
        with lock:
            woke.append(time.monotonic() - started)

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    committer.commit(Commit(enqueue=[queued_message("m1", at=SystemClock().now())]))
    for thread in threads:
        thread.join(10)
    assert len(woke) == 4
    assert max(woke) < 1.5


def test_without_notify_the_store_sleeps(postgres_url: str) -> None:
    """``notify=False``: commits send no notification and ``wait_for_work`` sleeps its
    whole timeout on the store's clock."""
    waiter = SqlWorkflowStore(server_engine(postgres_url, pool_size=2), notify=False)
    committer = SqlWorkflowStore(server_engine(postgres_url, pool_size=2), notify=False)
    try:
        message = queued_message("quiet", at=SystemClock().now())
        elapsed = waited(waiter, 0.6, later(lambda: committer.commit(Commit(enqueue=[message]))))
        assert elapsed >= 0.55
    finally:
        committer.ack(["quiet"])
        dispose(waiter)
        dispose(committer)


def test_lease_drains_notifications(pair: tuple[SqlWorkflowStore, SqlWorkflowStore]) -> None:
    """A busy worker never waits, so ``lease`` reads the notifications its connection
    holds (PostgreSQL keeps them queued until every listener has): after a lease there
    is nothing stale left to wake the next wait."""
    waiter, committer = pair
    now = SystemClock().now()
    for i in range(50):
        committer.commit(Commit(enqueue=[queued_message(f"m{i}", at=now)]))
    time.sleep(0.1)
    assert len(waiter.lease(worker="w", limit=100, lease_seconds=30)) == 50
    started = time.monotonic()
    waiter.wait_for_work(0.3)
    assert time.monotonic() - started >= 0.25
