"""A worker thread reads the records of a leased batch once (``BatchRecords``) and keeps
them current with its own commits: fewer loads, the same outcomes."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from stepkernel import ActionStatus, App, Registry
from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.records import Record, RecordKey
from stepkernel.ports.store import Delivery, WorkflowStore
from stepkernel.runtime.prefetch import BatchRecords
from stepkernel.testing.proxy import StoreProxy


class Box:
    def __init__(self, id: int) -> None:
        self.id = id


BODIES: list[str] = []


def _leaf(step: Any, box: Box) -> None:
    BODIES.append(step.action_id)


def _fan(step: Any, box: Box) -> None:
    step.on([Box(box.id * 100 + i) for i in range(20)], "leaf")


def registry() -> Registry:
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=lambda k: Box(int(k)))
    reg.action(Box, "fan", steps=[_fan, lambda step, box: None])
    reg.action(Box, "leaf", steps=[_leaf])
    return reg


class CountingStore(StoreProxy):
    """Forwards to *inner*, counting loads."""

    def __init__(self, inner: WorkflowStore) -> None:
        super().__init__(inner)
        self.loads = 0

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        self.loads += 1
        return super().load(keys)


def _sqlite(path: Path) -> WorkflowStore:
    from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine

    return SqlWorkflowStore(sqlite_engine(path / "db.sqlite"))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CountingStore:
    inner = InMemoryWorkflowStore() if request.param == "memory" else _sqlite(tmp_path)
    return CountingStore(inner)


def _handle_batch(app: App, known: BatchRecords | None) -> int:
    """Lease everything due as one batch and handle it as a worker thread does; the
    number of messages handled."""
    batch = app.store.lease(worker="w", limit=100, lease_seconds=60)
    if known is not None:
        known.prefetch(d.message for d in batch)
    for delivery in batch:
        app.engine.handle(delivery, known)
    return len(batch)


def _siblings_leased(store: CountingStore, box: int) -> tuple[App, str, list[Delivery]]:
    """An app whose root (on ``Box(box)``) has fanned out, and its twenty children's
    run messages leased as one batch."""
    app = App(registry(), store)
    root = app.invoke_later(Box(box), "fan").id
    assert root is not None
    _handle_batch(app, BatchRecords(store))
    return app, root, app.store.lease(worker="w", limit=100, lease_seconds=60)


def test_a_batch_of_siblings_reads_its_records_once(store: CountingStore) -> None:
    """The twenty children of one fan-out, leased together, run on records read in one
    load (their parent's kept current by each commit) instead of one load each, and the
    tree ends exactly as without prefetching."""
    app = App(registry(), store)
    root = app.invoke_later(Box(1), "fan").id
    assert root is not None
    _handle_batch(app, BatchRecords(store))  # the fan-out step
    store.loads = 0
    known = BatchRecords(store)
    assert _handle_batch(app, known) == 20
    assert store.loads <= 2  # the prefetch (plus at most one the kernel asks for)
    assert known.loads_saved >= 19
    _handle_batch(app, BatchRecords(store))  # the final step
    assert app.get(root).status is ActionStatus.SUCCEEDED
    assert [a.status for a in app.tree(root).walk()] == [ActionStatus.SUCCEEDED] * 21


def test_a_record_changed_by_another_writer_costs_a_conflict_not_an_error(
    store: CountingStore,
) -> None:
    """A sibling's record committed by another writer after the batch was read makes
    the next commit on the shared parent conflict; the engine reloads, decides again,
    and every child still settles exactly once (each body ran once)."""
    BODIES.clear()
    app, root, batch = _siblings_leased(store, 2)
    known = BatchRecords(store)
    known.prefetch(d.message for d in batch)
    app.engine.handle(batch[0])  # "another writer": no shared knowledge
    before = app.engine.conflicts
    for delivery in batch[1:]:
        app.engine.handle(delivery, known)
    assert app.engine.conflicts == before + 1  # only the first stale use
    _handle_batch(app, BatchRecords(store))
    assert [a.status for a in app.tree(root).walk()] == [ActionStatus.SUCCEEDED] * 21
    assert len(BODIES) == len(set(BODIES)) == 20


def test_records_older_than_max_age_are_read_again(store: CountingStore) -> None:
    """A record known for longer than ``max_age`` is loaded again rather than served."""
    now = [0.0]
    app = App(registry(), store)
    app.invoke_later(Box(3), "fan")
    known = BatchRecords(store, max_age=0.5, clock=lambda: now[0])
    batch = app.store.lease(worker="w", limit=100, lease_seconds=60)
    known.prefetch(d.message for d in batch)
    keys = [("action", batch[0].message.action_id)]
    store.loads = 0
    known.load(keys)
    assert store.loads == 0
    now[0] = 0.6
    known.load(keys)
    assert store.loads == 1


def test_a_cancel_between_prefetch_and_use_wins(store: CountingStore) -> None:
    """An action cancelled after its batch was read: its body may still run (the record
    served was current when read) but its outcome is refused -- the action stays
    cancelled and no step of it is applied."""
    BODIES.clear()
    app, _root, batch = _siblings_leased(store, 4)
    known = BatchRecords(store)
    known.prefetch(d.message for d in batch)
    victim = batch[5].message.action_id
    app.cancel(victim)
    for delivery in batch:
        app.engine.handle(delivery, known)
    record = app.get(victim)
    assert record.status is ActionStatus.CANCELLED
    assert all(s.status.value != "succeeded" for s in record.steps)


def test_an_unreadable_record_in_a_batch_fails_only_its_own_action(tmp_path: Path) -> None:
    """A batch whose prefetch meets a stored record that does not decode is handled
    message by message: that action is quarantined (failed), the others of the batch
    run to the end, and the worker's threads live on."""
    import sqlalchemy

    from stepkernel.adapters.sql.schema import records

    store = _sqlite(tmp_path)
    app = App(registry(), store)
    roots = [app.invoke_later(Box(10 + i), "leaf").id for i in range(5)]
    assert all(roots)
    engine = store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.update(records)
            .where(records.c.kind == "action", records.c.key == roots[2])
            .values(data="{not json")
        )
    with app.worker(threads=2, poll=0.01, recover_every=None) as worker:
        assert worker.wait_idle(timeout=20)
        assert all(t.is_alive() for t in worker._loops)
    statuses = [app.get(str(r)).status for r in roots]
    assert statuses.pop(2) is ActionStatus.FAILED
    assert statuses == [ActionStatus.SUCCEEDED] * 4
