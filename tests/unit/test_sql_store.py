"""Behaviours of the SQL adapter beyond the store contract (schema, engines, errors)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.adapters.sql import (
    SCHEMA_VERSION,
    SqlWorkflowStore,
    check_schema,
    create_schema,
    sqlite_engine,
    upgrade_ddl,
)
from stepkernel.adapters.sql.schema import meta, records
from stepkernel.adapters.sql.statements import CHUNK, Statements
from stepkernel.domain.errors import (
    ConflictError,
    CorruptRecordError,
    StoreError,
    StoreUnavailableError,
)
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    AchievementRecord,
    RecordKey,
    Tombstone,
    key_of,
)
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import ActionQuery, Commit, WorkflowStore
from stepkernel.testing import FakeClock
from stepkernel.testing.backdoors import SqlBackdoors
from stepkernel.testing.contract import WorkflowStoreContract, achievement, action, bump, lane
from stepkernel.testing.contract_support import increment


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def engine(path: Path) -> Iterator[sqlalchemy.Engine]:
    engine = sqlite_engine(path)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: sqlalchemy.Engine) -> SqlWorkflowStore:
    return SqlWorkflowStore(engine, clock=FakeClock())


def test_schema_version_recorded(store: SqlWorkflowStore) -> None:
    """Creating the schema records ``SCHEMA_VERSION`` in ``sk_meta``."""
    with store.engine.connect() as conn:
        value = conn.execute(
            sqlalchemy.select(meta.c.value).where(meta.c.key == "schema_version")
        ).scalar_one()
    assert value == str(SCHEMA_VERSION)


def test_create_schema_is_idempotent(store: SqlWorkflowStore) -> None:
    """``create_schema`` on an existing, current schema changes nothing."""
    store.commit(Commit(writes=[achievement("k1")]))
    create_schema(store.engine)
    assert store.load([(ACHIEVEMENT, "k1")])[(ACHIEVEMENT, "k1")] == achievement("k1")


def test_version_1_schema_is_upgraded_on_open(engine: sqlalchemy.Engine) -> None:
    """A database at schema version 1 is upgraded by a store opened with
    ``create=True``: the new table and column appear, the version moves to
    :data:`SCHEMA_VERSION`, the records and queue are untouched, and queries on the new
    column still find the older rows."""
    create_schema(engine)
    old = SqlWorkflowStore(engine, create=False, clock=FakeClock())
    old.commit(Commit(writes=[achievement("k1")], enqueue=[Message.run("a1", 0, 0, 0.0)]))
    owing, done = (action(i, status=ActionStatus.SUCCEEDED) for i in ("owing", "done"))
    old.commit(Commit(writes=[owing, done]))
    old.commit(Commit(writes=[bump(owing, callbacks="pending"), bump(done, callbacks="ok")]))
    with engine.begin() as conn:  # back to version 1
        conn.exec_driver_sql("DROP TABLE sk_dead_messages")
        conn.exec_driver_sql("DROP INDEX ix_sk_records_callbacks")
        conn.exec_driver_sql("ALTER TABLE sk_records DROP COLUMN callbacks")
        conn.execute(meta.update().values(value="1"))
    with pytest.raises(StoreError, match="upgrade_ddl"):
        check_schema(engine)
    store = SqlWorkflowStore(engine, clock=FakeClock())
    check_schema(engine)
    assert sqlalchemy.inspect(engine).has_table("sk_dead_messages")
    assert "callbacks" in {c["name"] for c in sqlalchemy.inspect(engine).get_columns("sk_records")}
    assert store.load([(ACHIEVEMENT, "k1")])[(ACHIEVEMENT, "k1")] == achievement("k1")
    assert [m.id for m in store.queued()] == ["run:a1:0:0"]
    assert store.dead_letters() == []
    # Rows from before the upgrade have no callbacks column value: decided decoded.
    assert [r.id for r in store.find_actions(ActionQuery(callbacks="pending"))] == ["owing"]


def test_upgrade_ddl_renders_each_step_and_refuses_unknown_versions() -> None:
    """``upgrade_ddl`` gives the statements from a known older version (the new tables,
    then a compare-and-set of the version), none from the current one, and refuses a
    version it cannot upgrade."""
    statements = upgrade_ddl("sqlite", 1)
    assert statements[0].startswith("CREATE TABLE sk_dead_messages")
    assert "ALTER TABLE sk_records ADD COLUMN callbacks VARCHAR(16)" in statements
    assert statements[-1].startswith("UPDATE sk_meta SET value='2'")
    assert upgrade_ddl("sqlite", SCHEMA_VERSION) == []
    for version in (0, SCHEMA_VERSION + 1):
        with pytest.raises(StoreError):
            upgrade_ddl("sqlite", version)


def test_newer_schema_version_refused(engine: sqlalchemy.Engine) -> None:
    """A database written by a newer schema version is refused with a
    :class:`StoreError` naming both versions."""
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(meta.update().values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(StoreError) as caught:
        SqlWorkflowStore(engine)
    assert not isinstance(caught.value, StoreUnavailableError)
    assert (caught.value.fields["stored_version"], caught.value.fields["code_version"]) == (
        SCHEMA_VERSION + 1,
        SCHEMA_VERSION,
    )


def test_options_validated_early(engine: sqlalchemy.Engine) -> None:
    """The store takes a configured Engine (not a URL) and a Clock, checked at once."""
    with pytest.raises(TypeError):
        SqlWorkflowStore("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SqlWorkflowStore(engine, clock=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SqlWorkflowStore(engine, create="yes")  # type: ignore[arg-type]


def test_sqlite_engine_pragmas(engine: sqlalchemy.Engine) -> None:
    """``sqlite_engine`` connections run WAL, synchronous NORMAL and a 30 s busy timeout."""
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0


def test_two_stores_share_one_file(path: Path) -> None:
    """Two stores (two engines) on one file see each other's commits and leases."""
    clock = FakeClock()
    first_engine, second_engine = sqlite_engine(path), sqlite_engine(path)
    try:
        first = SqlWorkflowStore(first_engine, clock=clock)
        second = SqlWorkflowStore(second_engine, clock=clock)
        message = Message.run("a1", 0, 0, clock.now())
        first.commit(Commit(writes=[achievement("k1")], enqueue=[message]))
        assert second.load([(ACHIEVEMENT, "k1")])[(ACHIEVEMENT, "k1")] == achievement("k1")
        assert [d.message for d in second.lease(worker="w2", limit=5, lease_seconds=9)] == [message]
        assert first.lease(worker="w1", limit=5, lease_seconds=9) == []
    finally:
        first_engine.dispose()
        second_engine.dispose()


def test_two_engines_racing_lose_no_update(path: Path) -> None:
    """Threads on two engines (no shared in-process lock) serialise on SQLite's write
    lock without ``database is locked`` errors, and lose no increment."""
    engines = [sqlite_engine(path), sqlite_engine(path)]
    try:
        stores = [SqlWorkflowStore(e) for e in engines]
        key = (ACHIEVEMENT, "counter")
        stores[0].commit(Commit(writes=[achievement("counter", checksum="0")]))
        errors: list[BaseException] = []

        def work(store: WorkflowStore) -> None:
            try:
                increment(store, key, 30)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=work, args=(s,)) for s in stores * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        final = stores[1].load([key])[key]
        assert isinstance(final, AchievementRecord)
        assert final.checksum == "120"
    finally:
        for e in engines:
            e.dispose()


def test_driver_error_becomes_store_unavailable(store: SqlWorkflowStore) -> None:
    """A failing database raises :class:`StoreUnavailableError` chained from the
    driver error; nothing from SQLAlchemy escapes."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE sk_records")
        conn.exec_driver_sql("DROP TABLE sk_messages")
        conn.exec_driver_sql("DROP TABLE sk_dead_messages")
    calls: list[Callable[[], object]] = [
        lambda: store.load([(ACHIEVEMENT, "k1")]),
        lambda: store.commit(Commit(writes=[achievement("k1")])),
        lambda: store.lease(worker="w", limit=1, lease_seconds=1),
        lambda: store.ack(["m"]),
        lambda: store.release(["m"], worker="w"),
        lambda: store.extend(["m"], worker="w", lease_seconds=1),
        store.next_due,
        store.queued,
        lambda: store.find_actions(ActionQuery()),
        store.dead_letters,
        lambda: store.drop_dead_letters(["m"]),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailableError) as caught:
            call()
        assert isinstance(caught.value.__cause__, sqlalchemy.exc.SQLAlchemyError)


def test_create_false_leaves_the_database_alone(engine: sqlalchemy.Engine) -> None:
    """With ``create=False`` no table is created; using the store then fails as
    unavailable."""
    store = SqlWorkflowStore(engine, create=False)
    assert not sqlalchemy.inspect(engine).has_table("sk_records")
    with pytest.raises(StoreUnavailableError):
        store.load([(ACHIEVEMENT, "k1")])


def test_closed_store_is_unusable(store: SqlWorkflowStore) -> None:
    """After ``close`` every operation raises :class:`StoreUnavailableError`."""
    store.close()
    with pytest.raises(StoreUnavailableError):
        store.load([(ACHIEVEMENT, "k1")])
    with pytest.raises(StoreUnavailableError):
        store.commit(Commit(writes=[achievement("k1")]))


def test_changed_identity_columns_are_rewritten(store: SqlWorkflowStore) -> None:
    """Updates leave an action's identity columns alone; a write that changes one
    anyway still lands in the indexed columns ``find_actions`` filters on."""
    first = action("a1", name="deploy")
    store.commit(Commit(writes=[first]))
    renamed = bump(first, name="renamed", created_at=7.0)
    store.commit(Commit(writes=[renamed]))
    assert store.find_actions(ActionQuery(name="renamed")) == [renamed]
    assert store.find_actions(ActionQuery(name="deploy")) == []
    assert store.commits == 2


def _same_outcome(commits: list[Commit], store: WorkflowStore) -> list[str]:
    outcome = []
    for commit in commits:
        try:
            store.commit(commit)
            outcome.append("ok")
        except ConflictError as error:
            outcome.append(f"conflict {error.fields}")
    return outcome


def test_odd_commits_match_the_reference(store: SqlWorkflowStore) -> None:
    """Commits naming one key twice (delete and rewrite, two writes, a guard and a
    write) behave exactly as in the in-memory reference adapter."""
    k = achievement("k")
    commits = [
        Commit(writes=[k]),
        Commit(deletes=[Tombstone(key=key_of(k), version=1)], writes=[bump(k)]),
        Commit(writes=[bump(bump(k)), bump(bump(bump(k)))]),
        Commit(guards={key_of(k): 2}, writes=[bump(bump(k))]),
        Commit(guards={key_of(k): 2}, writes=[achievement("j")]),
        Commit(enqueue=[Message.run("a", 0, 0, 5.0), Message.run("a", 0, 0, 9.0)]),
        Commit(ack=["run:a:0:0"], enqueue=[Message.run("a", 0, 0, 7.0)]),
    ]
    memory = InMemoryWorkflowStore(clock=store.clock)
    assert _same_outcome(commits, store) == _same_outcome(commits, memory)
    keys = [key_of(k), (ACHIEVEMENT, "j")]
    assert store.load(keys) == memory.load(keys)
    assert store.queued() == memory.queued()
    assert store.commits == memory.commits


def test_sqlite_engine_validates_pool_size(path: Path) -> None:
    """``sqlite_engine`` refuses a pool size that is not a positive int."""
    with pytest.raises(ValueError, match="pool_size"):
        sqlite_engine(path, pool_size=0)


def _corrupt_action(store: SqlWorkflowStore, action_id: str) -> None:
    """Backdoor: overwrite an action row's stored text with invalid JSON."""
    with store.engine.begin() as conn:
        conn.execute(
            records.update()
            .where(records.c.kind == ACTION, records.c.key == action_id)
            .values(data="{not json")
        )


def test_corrupt_action_carries_stored_version(store: SqlWorkflowStore) -> None:
    """``load`` of an action row that does not decode raises
    :class:`CorruptRecordError` with the key and the row's stored ``version``."""
    first = action("a1")
    store.commit(Commit(writes=[first]))
    store.commit(Commit(writes=[bump(first)]))
    _corrupt_action(store, "a1")
    with pytest.raises(CorruptRecordError) as caught:
        store.load([(ACTION, "a1"), (LANE, "l1")])
    assert (tuple(caught.value.fields["key"]), caught.value.fields["version"]) == (
        (ACTION, "a1"),
        2,
    )


def test_find_actions_corrupt_row_carries_stored_version(store: SqlWorkflowStore) -> None:
    """``find_actions`` meeting an undecodable action row raises
    :class:`CorruptRecordError` with the row's stored ``version``."""
    store.commit(Commit(writes=[action("a1")]))
    _corrupt_action(store, "a1")
    with pytest.raises(CorruptRecordError) as caught:
        store.find_actions(ActionQuery())
    assert caught.value.fields["version"] == 1


def test_message_preload_round_trips(store: SqlWorkflowStore) -> None:
    """A message's ``preload`` keys survive enqueueing, ``queued`` and ``lease``."""
    message = Message.run("a1", 0, 0, 0.0, preload=((LANE, "l1"), (ACTION, "a0")))
    store.commit(Commit(enqueue=[message]))
    assert store.queued() == [message]
    assert [d.message for d in store.lease(worker="w", limit=1, lease_seconds=5)] == [message]


def test_load_more_keys_than_one_statement_binds(store: SqlWorkflowStore) -> None:
    """``load`` of more keys than one statement binds, of several kinds, present and
    absent, answers every key with its record or ``None``."""
    written = [achievement(f"k{i}") for i in range(CHUNK + 10)] + [lane("l1"), action("a1")]
    store.commit(Commit(writes=written))
    absent: list[RecordKey] = [(ACHIEVEMENT, "missing"), (LANE, "missing"), (ACTION, "a2")]
    keys = [key_of(r) for r in written] + absent
    expected = {key_of(r): r for r in written} | dict.fromkeys(absent)
    assert store.load(keys) == expected


def test_load_sees_each_kind_apart(store: SqlWorkflowStore) -> None:
    """Keys equal across kinds load as distinct records in one call."""
    same = [achievement("x"), lane("x")]
    store.commit(Commit(writes=same))
    assert store.load([(LANE, "x"), (ACHIEVEMENT, "x"), (ACTION, "x")]) == {
        (LANE, "x"): same[1],
        (ACHIEVEMENT, "x"): same[0],
        (ACTION, "x"): None,
    }


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+pysqlite://",
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
        "mysql+mysqldb://",
        "mysql+pymysql://",
        "mariadb+pymysql://",
    ],
)
def test_statements_run_directly_on_every_supported_dialect(url: str) -> None:
    """``Statements`` compiles every hot statement for the SQLite, PostgreSQL and
    MySQL/MariaDB drivers into text the DBAPI cursor runs as is, with native
    insert-if-absent (no database needed: only the dialect)."""
    engine = sqlalchemy.create_mock_engine(url, lambda *_args, **_kwargs: None)
    statements = Statements(engine.dialect)
    assert (statements.direct, statements.native_upsert) == (True, True)


def test_direct_option_validated_early(engine: sqlalchemy.Engine) -> None:
    """``direct`` must be a bool."""
    with pytest.raises(TypeError, match="direct"):
        SqlWorkflowStore(engine, direct="yes")  # type: ignore[arg-type]


class TestSqliteStoreThroughCore(SqlBackdoors, WorkflowStoreContract):
    """With ``direct=False`` every statement runs through SQLAlchemy's
    ``Connection.execute`` (the path for unusual drivers): the store still meets the
    contract."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    def make_store(self, clock: Clock) -> WorkflowStore:
        return SqlWorkflowStore(sqlite_engine(self.path), clock=clock, direct=False)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, SqlWorkflowStore)
        store.close()
        store.engine.dispose()


def test_each_thread_keeps_one_sqlite_connection(store: SqlWorkflowStore) -> None:
    """On a SQLite file every thread keeps one connection (and cursor) for its loads,
    commits and leases instead of a pool checkout per call; another thread has its own,
    and a rolled-back write leaves the pinned connection usable."""

    def session() -> object:
        with store._lone() as lone:
            return lone

    first = session()
    store.commit(Commit(writes=[achievement("k1")]))
    with pytest.raises(ConflictError):
        store.commit(Commit(writes=[achievement("k1")]))  # version 1 again: refused
    store.lease(worker="w", limit=5, lease_seconds=5)
    assert session() is first
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(session()))
    thread.start()
    thread.join()
    assert other[0] is not first
    assert store.load([("achievement", "k1")])[("achievement", "k1")] is not None


def test_a_shared_in_memory_sqlite_database_is_not_pinned() -> None:
    """``:memory:`` is one connection every thread shares: nothing is pinned there."""
    store = SqlWorkflowStore(sqlite_engine(":memory:"))
    with store._lone() as a, store._lone() as b:
        assert a is not b  # a fresh session (cursor) per call on the shared connection
