"""A stored record that no longer decodes fails its own action; the worker goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy

from stepkernel import ActionStatus, App, Registry
from stepkernel.adapters.sql.schema import records
from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine
from stepkernel.domain.records import ACTION, ActionRecord


class Box:
    def __init__(self, id: int) -> None:
        self.id = id


def _app(path: Path) -> App:
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=lambda k: Box(int(k)))
    reg.action(Box, "two", steps=[lambda step, box: None, lambda step, box: None])
    return App(reg, SqlWorkflowStore(sqlite_engine(path)))


def _garble(app: App, action_id: str) -> None:
    store = app.store
    assert isinstance(store, SqlWorkflowStore)
    with store.engine.begin() as conn:
        conn.execute(
            sqlalchemy.update(records)
            .where(records.c.kind == ACTION, records.c.key == action_id)
            .values(data="[1, 2, tampered")
        )


def test_unreadable_action_fails_with_a_typed_error_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    """An action whose stored text was damaged ends ``failed`` with a CorruptRecordError
    recorded, while the other roots the worker handles still succeed."""
    app = _app(tmp_path / "damaged.db")
    damaged = app.invoke_later(Box(1), "two").id
    healthy = [app.invoke_later(Box(n), "two").id for n in range(2, 6)]
    assert damaged is not None
    _garble(app, damaged)
    processed = app.run_pending()
    assert processed >= 1 + 2 * len(healthy)
    record: Any = app.store.load([(ACTION, damaged)])[(ACTION, damaged)]
    assert isinstance(record, ActionRecord)
    assert record.status is ActionStatus.FAILED
    assert record.error is not None
    assert record.error.type == "CorruptRecordError"
    for action_id in healthy:
        assert app.get(action_id or "").status is ActionStatus.SUCCEEDED
    assert app.store.queued() == []
