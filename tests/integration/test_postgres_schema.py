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
)
from stepkernel.domain.errors import StoreError
from stepkernel.domain.records import key_of
from stepkernel.ports.store import Commit
from stepkernel.testing.contract import achievement
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
    """docs/adapters.md shows exactly the DDL the code renders for PostgreSQL."""
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert script() + "\n" in blocks


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


@pytest.mark.parametrize("stored", [SCHEMA_VERSION + 1, SCHEMA_VERSION - 1])
def test_version_mismatch_is_reported(namespace: Namespace, stored: int) -> None:
    """A database at another schema version is refused by the store and by
    :func:`check_schema` with :class:`StoreError` naming both versions (and telling
    whether stepkernel or the database is behind)."""
    engine = namespace()
    create_schema(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE sk_meta SET value = %(v)s WHERE key = 'schema_version'", {"v": str(stored)}
        )
    for attempt in (partial(SqlWorkflowStore, engine), partial(check_schema, engine)):
        with pytest.raises(StoreError) as caught:
            attempt()
        assert caught.value.fields == {"stored_version": stored, "code_version": SCHEMA_VERSION}
        advice = "upgrade stepkernel" if stored > SCHEMA_VERSION else "migrate the database"
        assert advice in str(caught.value)


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
