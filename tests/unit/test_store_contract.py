"""The store contract suite, run against the in-memory and the SQLite adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.adapters.sql import SqlWorkflowStore, sqlite_engine
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import WorkflowStore
from stepkernel.testing.backdoors import SqlBackdoors
from stepkernel.testing.contract import WorkflowStoreContract


class TestInMemoryStore(WorkflowStoreContract):
    """The reference adapter meets its own contract."""

    def make_store(self, clock: Clock) -> WorkflowStore:
        return InMemoryWorkflowStore(clock=clock)


class TestSqliteStore(SqlBackdoors, WorkflowStoreContract):
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


class TestSqliteMemoryStore(SqlBackdoors, WorkflowStoreContract):
    """The SQL adapter on a private in-memory SQLite database meets the contract."""

    def make_store(self, clock: Clock) -> WorkflowStore:
        return SqlWorkflowStore(sqlite_engine(":memory:"), clock=clock)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, SqlWorkflowStore)
        store.close()
        store.engine.dispose()
