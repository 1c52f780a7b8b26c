"""The SQL store on a real PostgreSQL server (psycopg 3): the whole store contract, then
what only a server with concurrent connections can show -- workers on several machines
(engines) leasing disjoint messages, racing commits with one winner, absent keys held
against concurrent inserts, and column bounds."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import sqlalchemy

from stepkernel.adapters.sql import SqlWorkflowStore, server_engine
from stepkernel.adapters.sql.rows import record_row
from stepkernel.adapters.sql.schema import KEY_LENGTH, MESSAGE_ID_LENGTH, records
from stepkernel.adapters.sql.session import CoreSession, DirectSession
from stepkernel.domain.errors import (
    ConflictError,
    InvalidInputError,
    StoreUnavailableError,
)
from stepkernel.domain.records import ACHIEVEMENT, LANE, AchievementRecord, key_of
from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.store import Commit, WorkflowStore
from stepkernel.testing.backdoors import SqlBackdoors, empty_sql_tables
from stepkernel.testing.contract import WorkflowStoreContract, achievement, bump, lane
from stepkernel.testing.contract_support import conflict_of, queued_message

pytestmark = pytest.mark.integration

StoreFactory = Callable[..., SqlWorkflowStore]


def empty(engine: sqlalchemy.Engine) -> None:
    """Backdoor: remove every record and message (the tables stay)."""
    empty_sql_tables(engine)


def open_store(url: str, *, clock: Clock | None = None, **options: Any) -> SqlWorkflowStore:
    """A store on its own engine (its own pool: another "machine"), on empty tables."""
    store = SqlWorkflowStore(server_engine(url, **{"pool_size": 4, **options}), clock=clock)
    empty(store.engine)
    return store


def dispose(store: SqlWorkflowStore) -> None:
    store.close()
    store.engine.dispose()


@pytest.fixture
def stores(postgres_url: str) -> Iterator[StoreFactory]:
    """Opens stores on the test database (the first one empties it), disposed after
    the test."""
    opened: list[SqlWorkflowStore] = []

    def make(*, clock: Clock | None = None, **options: Any) -> SqlWorkflowStore:
        if opened:
            store = SqlWorkflowStore(
                server_engine(postgres_url, **{"pool_size": 4, **options}), clock=clock
            )
        else:
            store = open_store(postgres_url, clock=clock, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        dispose(store)


class TestPostgresStore(SqlBackdoors, WorkflowStoreContract):
    """The SQL adapter on PostgreSQL meets the store contract."""

    @pytest.fixture(autouse=True)
    def _database(self, postgres_url: str) -> None:
        self.url = postgres_url

    def make_store(self, clock: Clock) -> WorkflowStore:
        return open_store(self.url, clock=clock)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, SqlWorkflowStore)
        dispose(store)


def run_together(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run *jobs* in threads released at once; each one's result or raised error."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except Exception as error:  # reported to the test as a value
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# -- leasing from several machines ---------------------------------------------------------


def test_two_machines_lease_disjoint_messages(stores: StoreFactory) -> None:
    """Eight threads on two engines lease (``FOR UPDATE SKIP LOCKED``) until the queue
    is drained: every message is handed out exactly once."""
    first, second = stores(), stores()
    now = SystemClock().now()
    ids = [f"m{i:03d}" for i in range(400)]
    first.commit(Commit(enqueue=[queued_message(i, at=now - 1) for i in ids]))
    leased: list[str] = []
    lock = threading.Lock()

    def drain(store: SqlWorkflowStore, worker: str) -> int:
        batches = 0
        while batch := store.lease(worker=worker, limit=7, lease_seconds=60):
            batches += 1
            with lock:
                leased.extend(d.message.id for d in batch)
        return batches

    results = run_together(
        [partial(drain, store, f"w{n}") for n in range(4) for store in (first, second)]
    )
    assert all(isinstance(r, int) for r in results), results
    assert sum(results) >= 400 // 7  # many batches, from both engines
    assert Counter(leased) == Counter(ids)


def test_leasing_does_not_wait_for_a_locked_message(stores: StoreFactory) -> None:
    """A message locked by another transaction is skipped, not waited for: ``lease``
    returns the others at once."""
    store = stores()
    now = SystemClock().now()
    store.commit(
        Commit(enqueue=[queued_message("held", at=now - 2), queued_message("free", at=now - 1)])
    )
    with store.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SELECT id FROM sk_messages WHERE id = 'held' FOR UPDATE")
        started = time.monotonic()
        got = store.lease(worker="w1", limit=10, lease_seconds=60)
        assert time.monotonic() - started < 2
    assert [d.message.id for d in got] == ["free"]


def test_lease_hands_out_the_earliest_due_first(stores: StoreFactory) -> None:
    """The one-statement lease returns the earliest ``due`` first (ties by id), granted:
    one delivery each, ``due`` moved to the lease end."""
    store = stores()
    now = SystemClock().now()
    store.commit(
        Commit(
            enqueue=[
                queued_message("c", at=now - 1),
                queued_message("b", at=now - 3),
                queued_message("a", at=now - 1),
                queued_message("later", at=now + 60),
            ]
        )
    )
    got = store.lease(worker="w1", limit=10, lease_seconds=30)
    assert [d.message.id for d in got] == ["b", "a", "c"]
    assert {d.deliveries for d in got} == {1}
    assert store.lease(worker="w2", limit=10, lease_seconds=30) == []


def test_the_lease_finds_its_rows_by_index_however_long_the_queue(
    stores: StoreFactory,
) -> None:
    """The one-statement lease reads the due index and the primary key, never the whole
    queue: its plan (generic, as a prepared statement runs it) has no sequential scan of
    the messages, with 3,000 queued."""
    store = stores()
    now = SystemClock().now()
    store.commit(
        Commit(enqueue=[queued_message(f"m{i:05d}", at=now - i % 50) for i in range(3000)])
    )
    sql = store._sql.lease_one
    assert sql is not None
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE sk_messages")
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute("EXPLAIN " + sql, (now, 32, "w", now + 60, now + 60))
            plan = "\n".join(str(row[0]) for row in cursor.fetchall())
        conn.rollback()
    assert "Seq Scan" not in plan, plan


def test_leasing_without_the_direct_path_runs_in_a_transaction(
    stores: StoreFactory, postgres_url: str
) -> None:
    """A store told not to run statements on the raw cursor (``direct=False``) leases
    through the general transaction, not the autocommit one-statement lease: a leased
    message is granted and is not handed out twice."""
    stores()  # empties the tables
    store = SqlWorkflowStore(server_engine(postgres_url, pool_size=2), direct=False)
    try:
        now = SystemClock().now()
        store.commit(Commit(enqueue=[queued_message("m1", at=now - 1)]))
        got = store.lease(worker="w1", limit=5, lease_seconds=30)
        assert [d.message.id for d in got] == ["m1"]
        assert store.lease(worker="w2", limit=5, lease_seconds=30) == []
    finally:
        dispose(store)


def test_a_corrupt_message_is_moved_aside_by_the_one_statement_lease(
    stores: StoreFactory,
) -> None:
    """The one-statement lease grants the whole batch; a message of it that does not
    decode is then moved to ``sk_dead_messages`` (counted as delivered once) and the rest
    stays leased to the worker."""
    store = stores()
    now = SystemClock().now()
    store.commit(Commit(enqueue=[queued_message("bad", at=now - 1), queued_message("ok", at=now)]))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sk_messages SET data = '{' WHERE id = 'bad'")
    leased = store.lease(worker="w1", limit=10, lease_seconds=30)
    assert [d.message.id for d in leased] == ["ok"]
    with store.engine.connect() as conn:
        queued = conn.exec_driver_sql("SELECT id, owner, deliveries FROM sk_messages").all()
        dead = conn.exec_driver_sql("SELECT id, data, deliveries FROM sk_dead_messages").all()
    assert [tuple(r) for r in queued] == [("ok", "w1", 1)]
    assert [tuple(r) for r in dead] == [("bad", "{", 1)]


def test_a_failed_move_still_hands_out_the_rest_of_the_batch(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When moving an undecodable message fails after the one-statement lease granted
    the batch, the lease still returns the messages that decode (the damaged one stays
    leased until its lease runs out, then the next lease moves it)."""
    store = stores()
    now = SystemClock().now()
    store.commit(Commit(enqueue=[queued_message("bad", at=now - 1), queued_message("ok", at=now)]))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sk_messages SET data = '{' WHERE id = 'bad'")

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise sqlalchemy.exc.OperationalError("move", {}, Exception("server went away"))

    monkeypatch.setattr(store._dead, "move", broken)
    leased = store.lease(worker="w1", limit=10, lease_seconds=0.2)
    assert [d.message.id for d in leased] == ["ok"]
    monkeypatch.undo()
    time.sleep(0.3)  # both leases ran out: "ok" is redelivered, "bad" moved this time
    assert [d.message.id for d in store.lease(worker="w2", limit=10, lease_seconds=30)] == ["ok"]
    assert [letter.message_id for letter in store.dead_letters()] == ["bad"]


def test_a_late_move_leaves_a_fresh_message_of_the_same_id_alone(stores: StoreFactory) -> None:
    """A move that comes after the message was moved and queued afresh under the same
    id (its worker stalled past its lease) changes nothing."""
    store = stores()
    now = SystemClock().now()
    fresh = queued_message("m1", at=now)
    store.commit(Commit(enqueue=[fresh]))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sk_messages SET data = '{' WHERE id = 'm1'")
    assert store.lease(worker="w2", limit=10, lease_seconds=30) == []
    store.commit(Commit(enqueue=[fresh]))
    with store.engine.begin() as conn:
        store._dead.move(CoreSession(conn), [("m1", "late", "{")], at=now, extra=0)
    assert store.queued() == [fresh]
    [letter] = store.dead_letters()
    assert (letter.data, letter.reason != "late") == ("{", True)


def test_each_thread_keeps_one_connection(stores: StoreFactory) -> None:
    """Loads, commits and leases of one thread run on one pinned connection (one
    backend), not a pool checkout per call; another thread has its own."""
    store = stores()

    def backend() -> int:
        with store._lone() as session:  # the session every lone statement runs on
            assert isinstance(session, DirectSession)
            ((pid,),) = session.fetch("SELECT pg_backend_pid()", ())
            return int(pid)

    first = backend()
    store.commit(Commit(writes=[achievement("k1")]))
    store.lease(worker="w", limit=5, lease_seconds=5)
    assert backend() == first
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(backend()))
    thread.start()
    thread.join()
    assert other
    assert other[0] != first


def test_threads_beyond_the_pin_limit_check_out_per_call(stores: StoreFactory) -> None:
    """Pins are limited to the pool's size (here 1): a second thread still works, on
    connections it checks out per call, and never waits for the pinned one."""
    store = stores(pool_size=1)
    store.commit(Commit(writes=[achievement("k1")]))  # this thread takes the one pin
    results: list[object] = []

    def other() -> None:
        store.commit(Commit(writes=[achievement("k2")]))
        results.append(store.load([(ACHIEVEMENT, "k2")])[(ACHIEVEMENT, "k2")])
        results.append(store.lease(worker="w", limit=1, lease_seconds=5))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert isinstance(results[0], AchievementRecord)
    assert results[1] == []


def test_threads_starting_together_never_pin_more_than_the_limit(postgres_url: str) -> None:
    """Twelve threads making their first call at once take at most the pool's size of
    pins (here 2 of 4 connections): another thread still gets a connection at once
    instead of waiting for the pool's timeout."""
    store = SqlWorkflowStore(server_engine(postgres_url, pool_size=2, pool_timeout=2))
    pinned = store._pinned
    assert pinned is not None
    start, done = threading.Barrier(13), threading.Event()

    def hold() -> None:
        start.wait()
        store.load([(ACHIEVEMENT, "k")])
        done.wait(20)  # keep this thread (and any pin it took) alive

    threads = [threading.Thread(target=hold) for _ in range(12)]
    try:
        for thread in threads:
            thread.start()
        start.wait()
        time.sleep(0.3)
        assert pinned._held <= 2
        store.load([(ACHIEVEMENT, "k")])  # would wait 2 s and fail if pins took all 4
    finally:
        done.set()
        for thread in threads:
            thread.join()
        dispose(store)


def test_a_pinned_transaction_runs_at_the_engines_isolation_level(postgres_url: str) -> None:
    """A transaction opened by hand on a pinned autocommit connection uses the level
    the engine gives its connections, as psycopg's own transactions would."""
    store = SqlWorkflowStore(
        server_engine(postgres_url, pool_size=2, isolation_level="REPEATABLE READ")
    )
    try:
        with store._write() as session:
            assert isinstance(session, DirectSession)
            ((level,),) = session.fetch("SHOW transaction_isolation", ())
        assert level == "repeatable read"
        pinned = store._pinned
        assert pinned is not None
        assert pinned._local.pin.begin_sql == "BEGIN ISOLATION LEVEL REPEATABLE READ"
    finally:
        dispose(store)


def test_closing_the_store_returns_a_pin_in_use_when_its_call_ends(postgres_url: str) -> None:
    """``close()`` during a call on a pinned connection does not pull it from under the
    call; the connection goes back to the pool when the call ends."""
    store = SqlWorkflowStore(server_engine(postgres_url, pool_size=2))
    pool: Any = store.engine.pool
    try:
        with store._write() as session:
            assert isinstance(session, DirectSession)
            store.close()
            assert session.fetch("SELECT 1", ()) == [(1,)]  # still usable mid-call
            assert pool.checkedout() == 1
        assert pool.checkedout() == 0
    finally:
        store.engine.dispose()


def test_a_terminated_pinned_connection_is_replaced(stores: StoreFactory) -> None:
    """When the server terminates a thread's pinned backend, that call fails with
    :class:`StoreUnavailableError` and the next one runs on a fresh connection."""
    store = stores()
    with store._lone() as session:
        assert isinstance(session, DirectSession)
        ((pid,),) = session.fetch("SELECT pg_backend_pid()", ())
    with store.engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
    time.sleep(0.2)
    with pytest.raises(StoreUnavailableError):
        store.load([(ACHIEVEMENT, "k1")])
    store.commit(Commit(writes=[achievement("k1")]))
    assert store.load([(ACHIEVEMENT, "k1")])[(ACHIEVEMENT, "k1")] is not None


# -- racing commits -----------------------------------------------------------------------


def test_racing_updates_have_one_winner(stores: StoreFactory) -> None:
    """Eight commits of version 2 of one record, from two engines at once: exactly one
    applies, every other raises :class:`ConflictError` (expected 1, actual 2)."""
    first, second = stores(), stores()
    for round_ in range(5):
        base = achievement(f"k{round_}", checksum="0")
        first.commit(Commit(writes=[base]))
        results = run_together(
            [
                partial(store.commit, Commit(writes=[bump(base, checksum=str(n))]))
                for n in range(4)
                for store in (first, second)
            ]
        )
        losers = [r for r in results if isinstance(r, ConflictError)]
        assert results.count(None) == 1, results
        assert len(losers) == 7, results
        assert all(conflict_of(e) == (key_of(base), 1, 2) for e in losers)
        stored = first.load([key_of(base)])[key_of(base)]
        assert stored is not None
        assert stored.version == 2


def test_racing_creates_have_one_winner(stores: StoreFactory) -> None:
    """Eight commits creating one record (version 1) at once: one applies, the others
    raise :class:`ConflictError` (expected 0, actual 1) -- the insert that found the key
    taken by a concurrent transaction is a conflict, not a driver error."""
    first, second = stores(), stores()
    for round_ in range(5):
        key = (ACHIEVEMENT, f"new{round_}")
        results = run_together(
            [
                partial(store.commit, Commit(writes=[achievement(key[1], checksum=str(n))]))
                for n in range(4)
                for store in (first, second)
            ]
        )
        assert results.count(None) == 1, results
        losers = [r for r in results if r is not None]
        assert all(isinstance(e, ConflictError) for e in losers), losers
        assert all(conflict_of(e) == (key, 0, 1) for e in losers)


def test_concurrent_increments_from_two_engines_lose_nothing(stores: StoreFactory) -> None:
    """Eight threads on two engines increment one counter with retry-on-conflict: the
    final count is exact under ``READ COMMITTED``."""
    first, second = stores(), stores()
    key = (ACHIEVEMENT, "counter")
    first.commit(Commit(writes=[achievement("counter", checksum="0")]))

    def add(store: SqlWorkflowStore, times: int) -> None:
        for _ in range(times):
            while True:
                current = store.load([key])[key]
                assert isinstance(current, AchievementRecord)
                try:
                    store.commit(
                        Commit(writes=[bump(current, checksum=str(int(current.checksum) + 1))])
                    )
                except ConflictError:
                    continue
                break

    results = run_together([partial(add, s, 20) for s in (first, second) * 4])
    assert results == [None] * 8
    final = second.load([key])[key]
    assert isinstance(final, AchievementRecord)
    assert (final.checksum, final.version) == ("160", 161)


# -- absent keys ------------------------------------------------------------------------


def _insert_uncommitted(conn: sqlalchemy.Connection, record: Any) -> None:
    conn.execute(records.insert().values(record_row(key_of(record), record)))


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_absent_guard_waits_for_an_uncommitted_insert(stores: StoreFactory, outcome: str) -> None:
    """A commit guarding the absence of a key that another transaction is inserting
    waits for it: if the insert commits, the guard conflicts (expected 0, actual 1) and
    nothing is written; if it rolls back, the guarded commit applies."""
    store = stores()
    key = (LANE, "l1")
    result: list[Any] = []
    with store.engine.connect() as conn:
        transaction = conn.begin()
        _insert_uncommitted(conn, lane("l1"))
        guarded = threading.Thread(
            target=lambda: result.append(
                _outcome(lambda: store.commit(Commit(guards={key: 0}, writes=[achievement("k1")])))
            )
        )
        guarded.start()
        guarded.join(0.5)
        assert guarded.is_alive(), "the guarded commit did not wait for the insert"
        if outcome == "commit":
            transaction.commit()
        else:
            transaction.rollback()
        guarded.join(10)
    written = store.load([(ACHIEVEMENT, "k1")])[(ACHIEVEMENT, "k1")]
    if outcome == "commit":
        assert isinstance(result[0], ConflictError)
        assert conflict_of(result[0]) == (key, 0, 1)
        assert written is None
    else:
        assert result == [None]
        assert written == achievement("k1")


def test_insert_waits_for_an_absent_guard(stores: StoreFactory) -> None:
    """While a commit holds a guarded absent key (its placeholder, uncommitted), another
    transaction's insert of that key waits, and the placeholder is gone -- never
    visible -- once the guarded commit is done."""
    store = stores()
    key = (LANE, "l1")
    with store.engine.connect() as conn:
        transaction = conn.begin()
        _insert_uncommitted(conn, achievement("gate"))
        # The guarded commit blocks on "gate" (created by it too) after holding "l1".
        guarded = threading.Thread(
            target=lambda: _outcome(
                lambda: store.commit(Commit(guards={key: 0}, writes=[achievement("gate")]))
            )
        )
        guarded.start()
        time.sleep(0.3)
        inserted: list[Any] = []
        inserter = threading.Thread(
            target=lambda: inserted.append(
                _outcome(lambda: store.commit(Commit(writes=[lane("l1")])))
            )
        )
        inserter.start()
        inserter.join(0.5)
        assert inserter.is_alive(), "the insert did not wait for the guarded absent key"
        transaction.rollback()
        guarded.join(10)
        inserter.join(10)
    assert inserted == [None]
    assert store.load([key])[key] == lane("l1")
    with store.engine.connect() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM sk_records WHERE version = 0").scalar() == 0
        )


def test_write_skew_on_absent_keys_is_refused(stores: StoreFactory) -> None:
    """Two commits at once, each guarding the absence of the key the other creates:
    never both apply (in any serial order the second one's guard fails)."""
    # A short deadlock_timeout: the two placeholders make the commits wait for each
    # other, and the database breaks the cycle; one commit is redone and conflicts.
    first = stores(connect_args={"options": "-c deadlock_timeout=50ms"})
    second = stores(connect_args={"options": "-c deadlock_timeout=50ms"})
    for n in range(5):
        a, b = (LANE, f"a{n}"), (LANE, f"b{n}")
        results = run_together(
            [
                partial(first.commit, Commit(guards={b: 0}, writes=[lane(a[1])])),
                partial(second.commit, Commit(guards={a: 0}, writes=[lane(b[1])])),
            ]
        )
        loaded = first.load([a, b])
        applied = [r is None for r in results]
        assert applied.count(True) == 1, results
        assert [loaded[a] is not None, loaded[b] is not None] == applied
        loser = next(r for r in results if r is not None)
        assert isinstance(loser, ConflictError)


def _outcome(job: Callable[[], Any]) -> Any:
    try:
        return job()
    except Exception as error:  # the test inspects it
        return error


# -- bounds -------------------------------------------------------------------------------


def test_key_at_the_column_limit_round_trips(stores: StoreFactory) -> None:
    """A record key of exactly :data:`KEY_LENGTH` characters and a message id of
    :data:`MESSAGE_ID_LENGTH` are stored and read back."""
    store = stores()
    record = achievement("k" * KEY_LENGTH)
    message = queued_message("m" * MESSAGE_ID_LENGTH, at=0)
    store.commit(Commit(writes=[record], enqueue=[message]))
    assert store.load([key_of(record)])[key_of(record)] == record
    assert store.queued() == [message]


@pytest.mark.parametrize(
    ("bad", "column"),
    [
        (Commit(writes=[achievement("k" * (KEY_LENGTH + 1))]), "sk_records.key"),
        (Commit(enqueue=[queued_message("m" * (MESSAGE_ID_LENGTH + 1), at=0)]), "sk_messages.id"),
        (Commit(writes=[achievement("nul\x00key")]), "sk_records.key"),
    ],
    ids=["long-key", "long-message-id", "nul"],
)
def test_values_the_columns_cannot_hold_are_refused(
    stores: StoreFactory, bad: Commit, column: str
) -> None:
    """A key longer than its column, or holding NUL, raises :class:`InvalidInputError`
    naming the column before anything is sent (instead of a driver error), and the rest
    of the commit is not applied."""
    store = stores()
    with pytest.raises(InvalidInputError) as caught:
        store.commit(Commit(writes=[achievement("ok"), *bad.writes], enqueue=bad.enqueue))
    assert caught.value.fields["column"] == column
    assert store.load([(ACHIEVEMENT, "ok")])[(ACHIEVEMENT, "ok")] is None
    assert store.queued() == []
