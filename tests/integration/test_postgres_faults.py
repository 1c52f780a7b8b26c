"""Faults on PostgreSQL: killed backends, deadlocks, and engines the store refuses.

A backend terminated under the store (``pg_terminate_backend``: a server restart, a
failover, an admin) fails one call with :class:`StoreUnavailableError`, and the next
call reconnects; a deadlock the database breaks is redone, not reported."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy
from test_postgres_store import dispose, empty
from test_postgres_worker import Box, registry

from stepkernel import ActionStatus, App
from stepkernel.adapters.sql import SqlWorkflowStore, server_engine
from stepkernel.adapters.sql.races import lost_race
from stepkernel.domain.errors import StoreUnavailableError
from stepkernel.domain.records import ACHIEVEMENT, key_of
from stepkernel.ports.clock import SystemClock
from stepkernel.ports.store import Commit
from stepkernel.testing.contract import achievement, bump
from stepkernel.testing.contract_support import queued_message
from stepkernel.testing.proxy import StoreProxy

pytestmark = pytest.mark.integration

APP = "stepkernel-faults"
"""``application_name`` of the store under test: what the tests terminate."""


@pytest.fixture
def store(postgres_url: str) -> Iterator[SqlWorkflowStore]:
    """A store whose connections carry :data:`APP` (and a 50 ms deadlock timeout)."""
    options = {"application_name": APP, "options": "-c deadlock_timeout=50ms"}
    store = SqlWorkflowStore(server_engine(postgres_url, pool_size=4, connect_args=options))
    empty(store.engine)
    try:
        yield store
    finally:
        dispose(store)


@pytest.fixture
def admin(postgres_url: str) -> Iterator[sqlalchemy.Connection]:
    """An autocommit connection outside the store, for looking and killing."""
    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        yield conn
    engine.dispose()


@pytest.fixture
def locker(postgres_url: str) -> Iterator[sqlalchemy.Connection]:
    """A transactional connection outside the store, for holding row locks (it never
    detects a deadlock first: the store's backend is the victim)."""
    engine = sqlalchemy.create_engine(
        postgres_url, connect_args={"options": "-c deadlock_timeout=10s"}
    )
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def terminate(admin: sqlalchemy.Connection, *, state: str | None = None) -> int:
    """Terminate the store's backends (only those in *state*, e.g. ``'idle'``); how
    many."""
    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = %(app)s AND pid <> pg_backend_pid()"
    )
    if state is not None:
        query += " AND state = %(state)s"
    killed = admin.exec_driver_sql(query, {"app": APP, "state": state}).scalar()
    time.sleep(0.1)  # let the backends go
    return int(killed or 0)


def test_killed_backend_fails_one_call_then_reconnects(
    store: SqlWorkflowStore, admin: sqlalchemy.Connection
) -> None:
    """Every pooled connection of the store killed: the next call raises
    :class:`StoreUnavailableError` (from the driver error), the one after reconnects
    and works -- loads, commits and leases alike."""
    record = achievement("k1")
    store.commit(Commit(writes=[record]))
    assert terminate(admin) >= 1
    with pytest.raises(StoreUnavailableError) as caught:
        store.load([key_of(record)])
    assert caught.value.__cause__ is not None
    assert store.load([key_of(record)])[key_of(record)] == record
    store.commit(Commit(writes=[bump(record)], enqueue=[queued_message("m1", at=0)]))
    assert [d.message.id for d in store.lease(worker="w", limit=1, lease_seconds=30)] == ["m1"]


def test_backend_killed_in_a_commit_leaves_nothing_half_done(
    store: SqlWorkflowStore, admin: sqlalchemy.Connection, locker: sqlalchemy.Connection
) -> None:
    """A backend killed while its commit waits on a lock: the commit raises
    :class:`StoreUnavailableError`, none of it is applied, and the store goes on."""
    first, second = achievement("a"), achievement("b")
    store.commit(Commit(writes=[first, second]))
    outcome: list[BaseException | None] = []

    def commit() -> None:
        try:
            store.commit(
                Commit(writes=[bump(first), bump(second)], enqueue=[queued_message("m", at=0)])
            )
            outcome.append(None)
        except BaseException as error:  # checked below
            outcome.append(error)

    with locker.begin():
        locker.exec_driver_sql("SELECT 1 FROM sk_records WHERE key = 'b' FOR UPDATE")
        thread = threading.Thread(target=commit)
        thread.start()
        _wait_for_lock_wait(admin)
        assert terminate(admin, state="active") == 1
        thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], StoreUnavailableError)
    assert store.load([key_of(first), key_of(second)]) == {
        key_of(first): first,
        key_of(second): second,
    }
    assert store.queued() == []
    store.commit(Commit(writes=[bump(first), bump(second)]))


def test_killed_listener_reconnects(store: SqlWorkflowStore, admin: sqlalchemy.Connection) -> None:
    """The listening connection killed: a wait sleeps out its timeout (no error), the
    next wait listens again and a commit wakes it."""
    store.wait_for_work(0.01)
    assert terminate(admin, state="idle") >= 1
    store.wait_for_work(0.2)  # finds the connection gone, sleeps, drops it
    committer = SqlWorkflowStore(server_engine(store.engine.url, pool_size=1))
    try:
        store.wait_for_work(0.01)  # listens again
        message = queued_message("m1", at=SystemClock().now())
        timer = threading.Timer(0.2, lambda: committer.commit(Commit(enqueue=[message])))
        started = time.monotonic()
        timer.start()
        store.wait_for_work(5.0)
        assert time.monotonic() - started < 1.5
        timer.join()
    finally:
        dispose(committer)


class _KillsBackendsWhenIdle(StoreProxy):
    """Forwards to the store under test; the first ``next_due`` (what a worker thread
    asks after a lease found nothing) first has the server terminate the store's
    backends (*kill*), so it runs on a killed connection.  ``raised`` is what it raised
    and ``done`` is set once it returned."""

    def __init__(self, inner: SqlWorkflowStore, kill: Callable[[], object]) -> None:
        super().__init__(inner)
        self.sql = inner
        self.kill = kill
        self.raised: BaseException | None = None
        self.done = threading.Event()

    def next_due(self) -> float | None:
        if self.done.is_set():
            return self.inner.next_due()
        self.kill()
        try:
            return self.inner.next_due()
        except BaseException as error:  # checked by the test
            self.raised = error
            raise
        finally:
            self.done.set()

    def wait_for_work(self, timeout: float) -> None:
        self.sql.wait_for_work(timeout)


def test_worker_thread_survives_a_backend_killed_under_its_idle_poll(
    store: SqlWorkflowStore, admin: sqlalchemy.Connection
) -> None:
    """A worker's only thread whose ``next_due`` (after an empty lease) meets a
    terminated backend logs the :class:`StoreUnavailableError` and goes on leasing: a
    root submitted afterwards runs to the end (the thread used to die there, leaving a
    live process that never leased again)."""
    faulty = _KillsBackendsWhenIdle(store, lambda: terminate(admin))
    app = App(registry(), faulty)
    with app.worker(threads=1, poll=0.01, recover_every=None):
        assert faulty.done.wait(10)
        assert isinstance(faulty.raised, StoreUnavailableError)
        root = app.invoke_later(Box(7), "three").id
        assert root is not None
        deadline = time.monotonic() + 15
        while app.get(root).status is not ActionStatus.SUCCEEDED:
            assert time.monotonic() < deadline, "the worker thread stopped leasing"
            time.sleep(0.02)


def test_deadlock_is_redone(
    store: SqlWorkflowStore, admin: sqlalchemy.Connection, locker: sqlalchemy.Connection
) -> None:
    """A commit the database aborts as a deadlock victim (``40P01``) is run again and
    applies once the other transaction is done; ``retries`` counts the redo."""
    first, second = achievement("a"), achievement("b")
    store.commit(Commit(writes=[first, second]))
    outcome: list[BaseException | None] = []

    def commit() -> None:
        try:
            store.commit(Commit(writes=[bump(first), bump(second)]))
            outcome.append(None)
        except BaseException as error:  # checked below
            outcome.append(error)

    with locker.begin():
        locker.exec_driver_sql("SELECT 1 FROM sk_records WHERE key = 'b' FOR UPDATE")
        thread = threading.Thread(target=commit)
        thread.start()
        _wait_for_lock_wait(admin)  # the commit holds "a" and waits for "b"
        # Waiting for "a" closes the cycle; the store's transaction is the victim.
        locker.exec_driver_sql("SELECT 1 FROM sk_records WHERE key = 'a' FOR UPDATE")
        time.sleep(0.2)
    thread.join(10)
    assert outcome == [None]
    assert store.retries >= 1
    loaded = store.load([key_of(first), key_of(second)])
    assert [r.version for r in loaded.values() if r is not None] == [2, 2]


def _wait_for_lock_wait(admin: sqlalchemy.Connection) -> None:
    """Until one of the store's backends waits for a lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = admin.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %(app)s AND wait_event_type = 'Lock'",
            {"app": APP},
        ).scalar()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the store never waited for the lock")


def test_lost_races_are_recognised() -> None:
    """Deadlocks, serialization failures and lock timeouts are lost races (redone);
    other driver errors, such as a unique violation, are not."""
    for error in (
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.SerializationFailure("could not serialize"),
        psycopg.errors.LockNotAvailable("lock timeout"),
    ):
        assert lost_race(error)
        assert lost_race(sqlalchemy.exc.OperationalError("SQL", {}, error))
    assert not lost_race(psycopg.errors.UniqueViolation("duplicate key"))
    assert not lost_race(psycopg.errors.AdminShutdown("terminating connection"))


def test_autocommit_engine_is_refused(postgres_url: str) -> None:
    """An engine in ``AUTOCOMMIT`` cannot make a commit atomic: the store refuses it."""
    engine = server_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with pytest.raises(ValueError, match="AUTOCOMMIT"):
            SqlWorkflowStore(engine)
    finally:
        engine.dispose()


def test_load_of_absent_key_does_not_fail(store: SqlWorkflowStore) -> None:
    """Lone reads run in autocommit: many in a row leave no transaction open and see
    each commit at once."""
    key = (ACHIEVEMENT, "k1")
    for _ in range(3):
        assert store.load([key]) == {key: None}
    store.commit(Commit(writes=[achievement("k1")]))
    assert store.load([key])[key] == achievement("k1")
    with store.engine.connect() as conn:
        idle_in_transaction = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %(app)s AND state = 'idle in transaction'",
            {"app": APP},
        ).scalar()
    assert idle_in_transaction == 0
