"""The runtime on PostgreSQL: two apps on two engines ("machines"), a worker each, run
sequential, fan-out, laned and achievement-keyed roots to the end -- every step once,
nothing stranded, no placeholder left behind."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from test_postgres_store import dispose, open_store

from stepkernel import ActionStatus, App, Registry
from stepkernel.adapters.sql import SqlWorkflowStore, server_engine
from stepkernel.ports.store import ActionQuery

pytestmark = pytest.mark.integration


class Box:
    """A trivial actor whose key is its id."""

    def __init__(self, id: int) -> None:
        self.id = id


RUNS: Counter[tuple[str, int]] = Counter()
_lock = threading.Lock()


def _count(step: Any, box: Box) -> None:
    with _lock:
        RUNS[(step.action_id, step.index)] += 1
    time.sleep(0.002)  # a body takes a moment: one worker cannot drain the queue alone


def _fan(step: Any, box: Box) -> None:
    _count(step, box)
    step.on([Box(box.id * 100 + i) for i in range(5)], "leaf")


def registry() -> Registry:
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=lambda k: Box(int(k)))
    reg.action(Box, "three", steps=[_count, _count, _count])
    reg.action(Box, "fan", steps=[_fan, _count])
    reg.action(Box, "leaf", steps=[_count])
    reg.action(Box, "laned", steps=[_count, _count], concurrency_key=lambda b: f"lane{b.id % 3}")
    reg.action(
        Box,
        "achieved",
        steps=[_count],
        checksum=lambda b: "same",
        checksum_key=lambda b: f"ck{b.id % 2}",
    )
    return reg


@pytest.fixture
def apps(postgres_url: str) -> Iterator[tuple[App, App]]:
    """Two apps on two engines over one (emptied) database."""
    first = open_store(postgres_url)
    second = SqlWorkflowStore(server_engine(postgres_url, pool_size=4))
    try:
        yield App(registry(), first), App(registry(), second)
    finally:
        dispose(first)
        dispose(second)


def test_two_machines_run_every_root_to_the_end(apps: tuple[App, App]) -> None:
    """Roots of every shape submitted through one app are finished by the workers of
    both: nothing pending or performing, nothing failed, every step body run once."""
    RUNS.clear()
    first, second = apps
    for i in range(20):
        first.invoke_later(Box(i), "three")
    for i in range(4):
        first.invoke_later(Box(1000 + i), "fan")
    for i in range(12):
        second.invoke_later(Box(2000 + i), "laned")
    for i in range(8):
        second.invoke_later(Box(3000 + i), "achieved")
    # Small batches, so the worker started second finds work left (with group commit a
    # worker leasing 32 at a time finished everything before the other one leased).
    with (
        first.worker(threads=2, poll=0.02, batch=2) as a,
        second.worker(threads=2, poll=0.02, batch=2) as b,
    ):
        assert a.wait_idle(timeout=60)
        assert b.wait_idle(timeout=60)
    assert a.processed > 0
    assert b.processed > 0
    actions = first.store.find_actions(ActionQuery())
    statuses = Counter(action.status for action in actions)
    assert not statuses.keys() & {ActionStatus.PENDING, ActionStatus.PERFORMING}, statuses
    assert not statuses.keys() & {ActionStatus.FAILED, ActionStatus.TIMED_OUT}, statuses
    assert statuses[ActionStatus.SUCCEEDED] >= 20 + 4 + 20
    assert RUNS
    assert all(count == 1 for count in RUNS.values()), RUNS.most_common(3)
    assert first.store.queued() == []
    store = first.store
    assert isinstance(store, SqlWorkflowStore)
    with store.engine.connect() as conn:
        placeholders = conn.exec_driver_sql("SELECT count(*) FROM sk_records WHERE version = 0")
        assert placeholders.scalar() == 0
