"""The schema on PostgreSQL: the DDL published for teams that run their own migrations
installs a working store, the schema version is checked (and a mismatch reported with
both versions), creating it from several processes at once is safe, and
``open_store("postgresql://...")`` wires it all."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy
from test_postgres_store import dispose, run_together

from stepkernel.adapters.sql import (
    SCHEMA_VERSION,
    SqlWorkflowStore,
    check_schema,
    create_schema,
    ddl,
    server_engine,
    upgrade_ddl,
)
from stepkernel.domain.encoding import encode_message, encode_record
from stepkernel.domain.errors import StoreError
from stepkernel.domain.records import ACHIEVEMENT, key_of
from stepkernel.ports.store import Commit
from stepkernel.testing.contract import achievement
from stepkernel.testing.contract_support import queued_message
from stepkernel.wiring import open_store

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"

Namespace = Callable[[], sqlalchemy.Engine]


@pytest.fixture
def namespace(postgres_url: str) -> Iterator[Namespace]:
    """Engines on a fresh, empty PostgreSQL schema (``search_path``), dropped after."""
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS sk_ns CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA sk_ns")
    engines: list[sqlalchemy.Engine] = []

    def make() -> sqlalchemy.Engine:
        engine = server_engine(
            postgres_url, pool_size=2, connect_args={"options": "-c search_path=sk_ns"}
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS sk_ns CASCADE")
    admin.dispose()


def script() -> str:
    """The PostgreSQL DDL as published: statements separated by blank lines."""
    return ";\n\n".join(ddl("postgresql")) + ";"


def test_published_ddl_is_the_schema() -> None:
    """docs/adapters.md shows exactly the DDL (install and upgrade from version 1) the
    code renders for PostgreSQL."""
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert script() + "\n" in blocks
    assert ";\n\n".join(upgrade_ddl("postgresql", 1)) + ";\n" in blocks


def test_published_ddl_installs_a_working_store(namespace: Namespace) -> None:
    """Running the published statements by hand gives a database the store accepts
    with ``create=False`` and :func:`check_schema` passes."""
    engine = namespace()
    with engine.begin() as conn:
        for statement in ddl("postgresql"):
            conn.exec_driver_sql(statement)
    check_schema(engine)
    store = SqlWorkflowStore(engine, create=False)
    record = achievement("k1")
    store.commit(Commit(writes=[record]))
    assert store.load([key_of(record)])[key_of(record)] == record


def test_check_schema_reports_a_missing_schema(namespace: Namespace) -> None:
    """On an empty database :func:`check_schema` raises :class:`StoreError` with
    ``stored_version`` ``None`` and creates nothing."""
    engine = namespace()
    with pytest.raises(StoreError) as caught:
        check_schema(engine)
    assert caught.value.fields == {"stored_version": None, "code_version": SCHEMA_VERSION}
    assert not sqlalchemy.inspect(engine).has_table("sk_records")


@pytest.mark.parametrize("stored", [SCHEMA_VERSION + 1, 0])
def test_version_mismatch_is_reported(namespace: Namespace, stored: int) -> None:
    """A database at a schema version this code cannot use or upgrade is refused by the
    store and by :func:`check_schema` with :class:`StoreError` naming both versions
    (and telling whether stepkernel is behind)."""
    engine = namespace()
    create_schema(engine)
    _set_version(engine, stored)
    for attempt in (partial(SqlWorkflowStore, engine), partial(check_schema, engine)):
        with pytest.raises(StoreError) as caught:
            attempt()
        assert caught.value.fields == {"stored_version": stored, "code_version": SCHEMA_VERSION}
        advice = "upgrade stepkernel" if stored > SCHEMA_VERSION else "cannot upgrade it"
        assert advice in str(caught.value)


def _set_version(engine: sqlalchemy.Engine, stored: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE sk_meta SET value = %(v)s WHERE key = 'schema_version'", {"v": str(stored)}
        )


def _install_version_1(engine: sqlalchemy.Engine) -> None:
    """The schema as stepkernel 1 installed it: no ``sk_dead_messages``, version 1, with
    a record and a queued message in it."""
    with engine.begin() as conn:
        for statement in ddl("postgresql"):
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("DROP TABLE sk_dead_messages")
        conn.exec_driver_sql("ALTER TABLE sk_records DROP COLUMN callbacks")  # and its index
        conn.exec_driver_sql(
            "INSERT INTO sk_records (kind, key, version, data) VALUES (%(kind)s, %(key)s, 1, %(data)s)",
            {"kind": "achievement", "key": "kept", "data": encode_record(achievement("kept"))},
        )
        conn.exec_driver_sql(
            "INSERT INTO sk_messages (id, kind, action_id, data, available_at, lease_until, "
            "deliveries, due) VALUES ('m1', 'run', 'a1', %(data)s, 0, 0, 0, 0)",
            {"data": encode_message(queued_message("m1", at=0.0))},
        )
    _set_version(engine, 1)


def test_version_1_is_upgraded_by_hand_with_the_published_statements(
    namespace: Namespace,
) -> None:
    """A version 1 database is refused by :func:`check_schema`, which names
    ``upgrade_ddl``; after running those statements it passes, the data is intact and
    the dead letters work."""
    engine = namespace()
    _install_version_1(engine)
    with pytest.raises(StoreError, match="upgrade_ddl") as caught:
        check_schema(engine)
    assert caught.value.fields == {"stored_version": 1, "code_version": SCHEMA_VERSION}
    with engine.begin() as conn:
        for statement in upgrade_ddl("postgresql", 1):
            conn.exec_driver_sql(statement)
    check_schema(engine)
    store = SqlWorkflowStore(engine, create=False)
    assert store.load([(ACHIEVEMENT, "kept")])[(ACHIEVEMENT, "kept")] == achievement("kept")
    assert [m.id for m in store.queued()] == ["m1"]
    assert store.dead_letters() == []


def test_version_1_is_upgraded_by_many_processes_at_once(namespace: Namespace) -> None:
    """Six stores opened with ``create=True`` at once on a version 1 database all
    succeed; the version row reads :data:`SCHEMA_VERSION` once, the data is intact."""
    engines = [namespace() for _ in range(6)]
    _install_version_1(engines[0])
    results = run_together([partial(create_schema, engine) for engine in engines])
    assert results == [None] * 6
    check_schema(engines[0])
    with engines[0].connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM sk_meta").scalars().all() == [
            str(SCHEMA_VERSION)
        ]
    store = SqlWorkflowStore(engines[1], create=False)
    assert [m.id for m in store.queued()] == ["m1"]


def test_schema_created_by_many_processes_at_once(namespace: Namespace) -> None:
    """Six engines creating the schema at the same moment all succeed and leave one
    version row."""
    engines = [namespace() for _ in range(6)]
    results = run_together([partial(create_schema, engine) for engine in engines])
    assert results == [None] * 6
    with engines[0].connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM sk_meta").scalars().all() == [
            str(SCHEMA_VERSION)
        ]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_open_store_wires_postgresql_urls(postgres_url: str, scheme: str) -> None:
    """``open_store`` takes ``postgresql://`` (and ``postgres://``) URLs to the SQL
    store on psycopg 3, at ``READ COMMITTED``."""
    url = sqlalchemy.engine.make_url(postgres_url).set(drivername=scheme)
    store = open_store(url.render_as_string(hide_password=False))
    assert isinstance(store, SqlWorkflowStore)
    try:
        assert store.engine.dialect.driver == "psycopg"
        with store.engine.connect() as conn:
            level = conn.exec_driver_sql("SHOW transaction_isolation").scalar()
        assert level == "read committed"
        assert store.load([("achievement", "nope")]) == {("achievement", "nope"): None}
    finally:
        dispose(store)
