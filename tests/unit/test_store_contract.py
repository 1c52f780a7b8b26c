"""The store contract suite, run against the in-memory and the SQLite adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.adapters.sql import SqlWorkflowStore, sqlite_engine
from stepkernel.adapters.sql.schema import records
from stepkernel.domain.records import RecordKey
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import WorkflowStore
from stepkernel.testing.contract import WorkflowStoreContract


class TestInMemoryStore(WorkflowStoreContract):
    """The reference adapter meets its own contract."""

    def make_store(self, clock: Clock) -> WorkflowStore:
        return InMemoryWorkflowStore(clock=clock)


class TestSqliteStore(WorkflowStoreContract):
    """The SQL adapter on a SQLite file meets the contract."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "store.db"

    def make_store(self, clock: Clock) -> WorkflowStore:
        return SqlWorkflowStore(sqlite_engine(self.path), clock=clock)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, SqlWorkflowStore)
        store.close()
        store.engine.dispose()

    def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
        _corrupt_sql(store, key)


class TestSqliteMemoryStore(WorkflowStoreContract):
    """The SQL adapter on a private in-memory SQLite database meets the contract."""

    def make_store(self, clock: Clock) -> WorkflowStore:
        return SqlWorkflowStore(sqlite_engine(":memory:"), clock=clock)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, SqlWorkflowStore)
        store.close()
        store.engine.dispose()

    def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
        _corrupt_sql(store, key)


def _corrupt_sql(store: WorkflowStore, key: RecordKey) -> None:
    """Backdoor: overwrite the record's stored text with invalid JSON."""
    assert isinstance(store, SqlWorkflowStore)
    with store.engine.begin() as conn:
        conn.execute(
            sqlalchemy.update(records)
            .where(records.c.kind == key[0], records.c.key == key[1])
            .values(data="{not json")
        )
