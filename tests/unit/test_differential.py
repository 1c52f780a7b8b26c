"""The SQL adapter on SQLite answers every random operation exactly as the in-memory
reference (records, conflicts, leases, queue, next_due, find_actions)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import settings

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.adapters.sql import SqlWorkflowStore, sqlite_engine
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import WorkflowStore
from stepkernel.testing.differential import DifferentialMachine


class SqliteDifferential(DifferentialMachine):
    """Memory versus SQLite (a private in-memory database per run)."""

    def make_store(self, clock: Clock) -> WorkflowStore:
        return SqlWorkflowStore(sqlite_engine(":memory:"), clock=clock)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, SqlWorkflowStore)
        store.close()
        store.engine.dispose()


TestSqliteDifferential = SqliteDifferential.TestCase
TestSqliteDifferential.settings = settings(settings(), max_examples=60, stateful_step_count=30)


class _ForgetfulStore(InMemoryWorkflowStore):
    """A store with a bug: a released lease stays leased."""

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        return None


class ForgetfulDifferential(DifferentialMachine):
    def make_store(self, clock: Clock) -> WorkflowStore:
        return _ForgetfulStore(clock=clock)


def test_the_differential_machine_catches_a_diverging_store() -> None:
    """Teeth: a store whose release does nothing diverges from the reference as soon as
    a released message is leased again, and the machine reports it."""
    machine = ForgetfulDifferential()
    message = ("a0", 0)
    machine.commit(writes=[], deletes=[], guards=[], enqueue=[(message, 0)], ack=[])
    machine.lease(worker="w0", seconds=30.0, only=None)
    machine.release(ids=[message], worker="w0")
    with pytest.raises(AssertionError, match="reference"):
        machine.lease(worker="w1", seconds=30.0, only=None)
    machine.teardown()
