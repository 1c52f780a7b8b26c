"""The SQL store on a real MySQL/MariaDB server (PyMySQL): the whole store contract, and
the concurrent behaviours that differ by database -- leasing with ``SKIP LOCKED``
(MariaDB 10.6+, MySQL 8+), racing commits with one winner, and absent keys kept absent
by ``REPEATABLE READ`` gap locks.

Skipped with a reason when PyMySQL is not installed (it is not yet in the ``dev``
extra); otherwise the server policy of :mod:`servers` applies: skipped locally, a
failure under ``CI=true`` when the server does not answer.  ``STEPKERNEL_MYSQL_URL``
overrides the default ``mysql://root@127.0.0.1:3306/test``.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from servers import unavailable
from test_postgres_store import run_together

from stepkernel.adapters.sql import SqlWorkflowStore, server_engine
from stepkernel.domain.errors import ConflictError
from stepkernel.domain.records import ACHIEVEMENT, LANE, key_of
from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.store import Commit, WorkflowStore
from stepkernel.testing.backdoors import SqlBackdoors, empty_sql_tables
from stepkernel.testing.contract import WorkflowStoreContract, achievement, bump, lane
from stepkernel.testing.contract_support import conflict_of, queued_message

pytest.importorskip("pymysql", reason="PyMySQL is not installed (pip install pymysql)")

pytestmark = pytest.mark.integration

MYSQL_URL = os.environ.get("STEPKERNEL_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


@pytest.fixture(scope="module")
def mysql_url() -> Iterator[str]:
    """A fresh database for this module (dropped at the end)."""
    admin = server_engine(MYSQL_URL, pool_size=1)
    name = f"stepkernel_test_{os.getpid()}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    except Exception as exc:  # any connection problem means "not reachable"
        admin.dispose()
        unavailable("MySQL/MariaDB", f"{type(exc).__name__}: {exc}")
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


def open_store(url: str, *, clock: Clock | None = None) -> SqlWorkflowStore:
    """A store on its own engine, on empty tables."""
    store = SqlWorkflowStore(server_engine(url, pool_size=4), clock=clock)
    empty_sql_tables(store.engine)
    return store


def dispose(store: SqlWorkflowStore) -> None:
    store.close()
    store.engine.dispose()


@pytest.fixture
def pair(mysql_url: str) -> Iterator[tuple[SqlWorkflowStore, SqlWorkflowStore]]:
    """Two stores on two engines ("machines"), on empty tables."""
    first = open_store(mysql_url)
    second = SqlWorkflowStore(server_engine(mysql_url, pool_size=4))
    try:
        yield first, second
    finally:
        dispose(first)
        dispose(second)


class TestMysqlStore(SqlBackdoors, WorkflowStoreContract):
    """The SQL adapter on MySQL/MariaDB meets the store contract."""

    @pytest.fixture(autouse=True)
    def _database(self, mysql_url: str) -> None:
        self.url = mysql_url

    def make_store(self, clock: Clock) -> WorkflowStore:
        return open_store(self.url, clock=clock)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, SqlWorkflowStore)
        dispose(store)


def test_two_machines_lease_disjoint_messages(
    pair: tuple[SqlWorkflowStore, SqlWorkflowStore],
) -> None:
    """Eight threads on two engines drain the queue: every message leased once."""
    first, _ = pair
    now = SystemClock().now()
    ids = [f"m{i:03d}" for i in range(300)]
    first.commit(Commit(enqueue=[queued_message(i, at=now - 1) for i in ids]))
    leased: list[str] = []
    lock = threading.Lock()

    def drain(store: SqlWorkflowStore, worker: str) -> None:
        while batch := store.lease(worker=worker, limit=7, lease_seconds=60):
            with lock:
                leased.extend(d.message.id for d in batch)

    jobs: list[Callable[[], Any]] = [
        partial(drain, store, f"w{n}") for n in range(4) for store in pair
    ]
    assert run_together(jobs) == [None] * 8
    assert Counter(leased) == Counter(ids)


def test_racing_commits_have_one_winner(pair: tuple[SqlWorkflowStore, SqlWorkflowStore]) -> None:
    """Eight updates of one record, then eight creates of one key, at once: one of each
    applies, the others raise :class:`ConflictError` with the right versions."""
    first, _ = pair
    base = achievement("k", checksum="0")
    first.commit(Commit(writes=[base]))
    updates = run_together(
        [
            partial(store.commit, Commit(writes=[bump(base, checksum=str(n))]))
            for n in range(4)
            for store in pair
        ]
    )
    assert updates.count(None) == 1, updates
    assert {conflict_of(e) for e in updates if e is not None} == {(key_of(base), 1, 2)}
    creates = run_together(
        [
            partial(store.commit, Commit(writes=[achievement("new", checksum=str(n))]))
            for n in range(4)
            for store in pair
        ]
    )
    assert creates.count(None) == 1, creates
    assert {conflict_of(e) for e in creates if e is not None} == {((ACHIEVEMENT, "new"), 0, 1)}


def test_write_skew_on_absent_keys_is_refused(
    pair: tuple[SqlWorkflowStore, SqlWorkflowStore],
) -> None:
    """Two commits at once, each guarding the absence of the key the other creates:
    never both apply (gap locks make them wait, the deadlock is redone, one conflicts)."""
    first, second = pair
    for n in range(10):
        a, b = (LANE, f"a{n}"), (LANE, f"b{n}")
        results = run_together(
            [
                partial(first.commit, Commit(guards={b: 0}, writes=[lane(a[1])])),
                partial(second.commit, Commit(guards={a: 0}, writes=[lane(b[1])])),
            ]
        )
        assert results.count(None) == 1, results
        assert all(isinstance(r, ConflictError) for r in results if r is not None)
