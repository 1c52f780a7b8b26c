"""PostgreSQL and Redis answer every random operation exactly as the in-memory
reference does (stepkernel.testing.differential), records byte for byte."""

from __future__ import annotations

import uuid

import pytest
import redis
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from stepkernel.adapters.redis import RedisWorkflowStore
from stepkernel.adapters.sql import SqlWorkflowStore
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import WorkflowStore
from stepkernel.testing.backdoors import empty_sql_tables
from stepkernel.testing.differential import DifferentialMachine
from stepkernel.wiring import open_store

pytestmark = pytest.mark.integration

RUNS = settings(max_examples=40, stateful_step_count=25, deadline=None, database=None)


def test_postgres_matches_the_reference(postgres_url: str) -> None:
    """Random commits, leases, releases, extensions and clock moves on PostgreSQL give
    the same answers and state as on the in-memory store."""

    class PostgresDifferential(DifferentialMachine):
        def make_store(self, clock: Clock) -> WorkflowStore:
            store = open_store(postgres_url, clock=clock)
            assert isinstance(store, SqlWorkflowStore)
            empty_sql_tables(store.engine)
            return store

        def dispose(self, store: WorkflowStore) -> None:
            assert isinstance(store, SqlWorkflowStore)
            store.close()
            store.engine.dispose()

    run_state_machine_as_test(PostgresDifferential, settings=RUNS)


def test_redis_matches_the_reference(redis_url: str) -> None:
    """The same random operations on Redis (a fresh key prefix per run)."""
    client = redis.Redis.from_url(redis_url)

    class RedisDifferential(DifferentialMachine):
        def make_store(self, clock: Clock) -> WorkflowStore:
            prefix = f"skdiff-{uuid.uuid4().hex[:12]}"
            return RedisWorkflowStore(client, prefix=prefix, clock=clock)

        def dispose(self, store: WorkflowStore) -> None:
            assert isinstance(store, RedisWorkflowStore)
            store.close()
            names = list(client.scan_iter(match=store.keys.pattern(), count=1000))
            if names:
                client.delete(*names)

    try:
        run_state_machine_as_test(RedisDifferential, settings=RUNS)
    finally:
        client.close()
