"""A queued message that no longer decodes is set aside as a dead letter; the queue, the
worker and the action it woke all go on (the recovery sweep gives the action a fresh
wake-up), and the operator can list and drop dead letters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stepkernel import ActionStatus, App, Registry, Worker
from stepkernel.adapters.sql import SqlWorkflowStore, check_schema, ddl, sqlite_engine
from stepkernel.adapters.sql.dead import DeadStatements
from stepkernel.adapters.sql.session import CoreSession
from stepkernel.cli import main
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ACHIEVEMENT
from stepkernel.ports.store import Commit
from stepkernel.testing.backdoors import SqlBackdoors
from stepkernel.testing.contract import achievement


class Box:
    def __init__(self, id: int) -> None:
        self.id = id


def _registry() -> Registry:
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=lambda k: Box(int(k)))
    reg.action(Box, "two", steps=[lambda step, box: None, lambda step, box: None])
    return reg


def _app(path: Path) -> App:
    return App(_registry(), SqlWorkflowStore(sqlite_engine(path)))


def _damage_first_message(app: App, action_id: str) -> str:
    [message] = app.store.queued(action_id=action_id)
    SqlBackdoors().corrupt_message(app.store, message.id, '["torn')
    return message.id


def test_a_damaged_wakeup_is_set_aside_and_the_sweep_replaces_it(tmp_path: Path) -> None:
    """Running the queue moves the damaged message to the dead letters while the other
    roots finish; the recovery sweep then re-creates the wake-up and the damaged root
    finishes too."""
    app = _app(tmp_path / "app.db")
    damaged = app.invoke_later(Box(1), "two").id
    healthy = [app.invoke_later(Box(n), "two").id for n in range(2, 5)]
    assert damaged is not None
    message_id = _damage_first_message(app, damaged)
    app.run_pending()
    for action_id in healthy:
        assert app.get(action_id or "").status is ActionStatus.SUCCEEDED
    assert [letter.message_id for letter in app.store.dead_letters()] == [message_id]
    assert app.get(damaged).status is not ActionStatus.SUCCEEDED
    assert app.recover() == 1
    app.run_pending()
    assert app.get(damaged).status is ActionStatus.SUCCEEDED
    assert app.store.queued() == []


def test_a_worker_keeps_going_past_a_damaged_message(tmp_path: Path) -> None:
    """A real worker pool meets the damaged message, sets it aside without stalling or
    slowing down, and its own recovery sweep brings the damaged root to success."""
    app = _app(tmp_path / "worker.db")
    damaged = app.invoke_later(Box(1), "two").id
    assert damaged is not None
    _damage_first_message(app, damaged)
    healthy = [app.invoke_later(Box(n), "two").id for n in range(2, 12)]
    with Worker(app, threads=2, recover_every=0.2):
        deadline = time.monotonic() + 20
        while app.get(damaged).status is not ActionStatus.SUCCEEDED:
            assert time.monotonic() < deadline, "the damaged root never finished"
            time.sleep(0.05)
    for action_id in healthy:
        assert app.get(action_id or "").status is ActionStatus.SUCCEEDED
    assert len(app.store.dead_letters()) == 1


def test_cli_lists_and_drops_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``stepkernel dead-letters`` prints each dead letter with its reason and stored
    text; ``--drop ID`` forgets it; ``inspect`` counts them."""
    path = tmp_path / "cli.db"
    app = _app(path)
    root = app.invoke_later(Box(1), "two").id
    assert root is not None
    message_id = _damage_first_message(app, root)
    app.run_pending()
    url = f"sqlite:///{path}"
    assert main(["dead-letters", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "dead letters: 1" in out
    assert message_id in out
    assert f"action={root}" in out
    assert '["torn' in out
    assert main(["inspect", "--db", url]) == 0
    assert "dead letters: 1" in capsys.readouterr().out
    assert main(["dead-letters", "--db", url, "--drop", message_id, "--drop", "nope"]) == 0
    assert "dropped 1 of 2" in capsys.readouterr().out
    assert main(["dead-letters", "--db", url]) == 0
    assert "dead letters: 0" in capsys.readouterr().out


def test_a_late_move_leaves_a_fresh_message_of_the_same_id_alone(tmp_path: Path) -> None:
    """A move that comes late -- its worker stalled while another worker moved the
    damaged message and the sweep queued a fresh one under the same id -- matches
    nothing: the fresh message stays queued and the dead letter keeps the damaged text."""
    store = SqlWorkflowStore(sqlite_engine(tmp_path / "late.db"))
    backdoor = SqlBackdoors()
    message = Message.run("a1", 0, 0, 0.0)
    store.commit(Commit(enqueue=[message]))
    backdoor.corrupt_message(store, message.id, "{torn")
    assert store.lease(worker="w2", limit=5, lease_seconds=30) == []
    store.commit(Commit(enqueue=[message]))  # the sweep's fresh wake-up
    late = DeadStatements(store.engine.dialect)
    with store.engine.begin() as conn:
        late.move(CoreSession(conn), [(message.id, "late", "{torn")], at=99.0, extra=0)
    assert store.queued() == [message]
    [letter] = store.dead_letters()
    assert letter.data == "{torn"
    assert letter.reason != "late"


def test_tables_without_a_version_row_are_upgraded_not_mislabelled(tmp_path: Path) -> None:
    """Tables an install left without a ``schema_version`` row (an older release's DDL
    whose INSERT failed, or a crash between the two) are taken for the oldest version and
    upgraded, never labelled current while missing what it needs."""
    engine = sqlite_engine(tmp_path / "unlabelled.db")
    with engine.begin() as conn:
        for statement in ddl("sqlite")[:-1]:  # no INSERT of the version
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("DROP TABLE sk_dead_messages")
        conn.exec_driver_sql("DROP INDEX ix_sk_records_callbacks")
        conn.exec_driver_sql("ALTER TABLE sk_records DROP COLUMN callbacks")
    store = SqlWorkflowStore(engine)
    check_schema(engine)
    store.commit(Commit(writes=[achievement("k1")]))
    assert store.load([(ACHIEVEMENT, "k1")])[(ACHIEVEMENT, "k1")] == achievement("k1")
