"""The recovery sweep re-creates wake-ups that the queue lost."""

from __future__ import annotations

from typing import Any

from stepkernel import ActionStatus, App, Registry
from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord
from stepkernel.ports.store import ActionQuery
from stepkernel.testing import drain, memory_app
from stepkernel.testing.proxy import StoreProxy


class Spot:
    def __init__(self, id: int) -> None:
        self.id = id


def _registry() -> Registry:
    reg = Registry()
    reg.register_actor(Spot, key=lambda s: s.id, load=lambda k: Spot(int(k)))

    def fan(step: Any, spot: Spot) -> None:
        step.do("leaf")

    reg.action(Spot, "root", steps=[fan, lambda step, spot: None])
    reg.action(Spot, "leaf", steps=[lambda step, spot: None])
    reg.action(Spot, "slow", timeout=30, steps=[lambda step, spot: step.wait(3600)])
    return reg


def _lose_queue(app: Any) -> None:
    app.store.ack([m.id for m in app.store.queued()])


def test_recover_recreates_a_lost_run_message() -> None:
    """A performing action whose run message was lost gets it back and finishes."""
    app = memory_app(_registry())
    root = app.invoke_later(Spot(1), "root")
    _lose_queue(app)
    assert app.recover() == 1
    drain(app)
    assert app.get(root.id or "").status is ActionStatus.SUCCEEDED


def test_recover_resends_the_settlement_of_a_finished_child() -> None:
    """A parent still waiting on a child that already finished is told again."""
    app = memory_app(_registry())
    root = app.invoke_now(Spot(1), "root")
    app.run_pending(limit=1)  # the child runs; its settle message is now queued
    _lose_queue(app)
    assert app.get(root.id or "").status is ActionStatus.PERFORMING
    assert app.recover() == 1
    drain(app)
    assert app.get(root.id or "").status is ActionStatus.SUCCEEDED


def test_recover_rearms_a_lost_timeout() -> None:
    """An armed timeout whose timer was lost is armed again and still fires (the step's
    lost wait timer comes back too)."""
    app = memory_app(_registry())
    slow = app.invoke_now(Spot(1), "slow")
    _lose_queue(app)
    assert app.recover() == 2
    drain(app)
    assert app.get(slow.id or "").status is ActionStatus.TIMED_OUT


def test_recover_is_idempotent() -> None:
    """With nothing lost, the sweep enqueues nothing."""
    app = memory_app(_registry())
    app.invoke_later(Spot(1), "root")
    assert app.recover() == 0
    assert app.recover() == 0


def test_recover_recreates_a_lost_wait_timer_due_when_it_was_due() -> None:
    """A step waiting on a timer whose message was lost gets the timer back, due at the
    time the wait ends (not at once)."""
    reg = _registry()
    reg.action(Spot, "nap", steps=[lambda step, spot: step.wait(60), lambda step, spot: None])
    app = memory_app(reg)
    nap = app.invoke_now(Spot(1), "nap")
    due = app.store.next_due()
    _lose_queue(app)
    assert app.recover() == 1
    assert app.store.next_due() == due
    assert app.run_pending() == 0  # not before its time
    drain(app)
    assert app.get(nap.id or "").status is ActionStatus.SUCCEEDED


def test_recover_follows_superseding_instead_of_failing_the_waiting_parent() -> None:
    """Found by the SIGKILL chaos test: a parent waiting on a child that was superseded
    must wait for the successor; the sweep must not read the child's own ``superseded``
    status as a failure and settle the parent unsuccessfully."""
    reg = Registry()
    reg.register_actor(Spot, key=lambda s: s.id, load=lambda k: Spot(int(k)))
    reg.action(Spot, "hold", concurrency_key=_lane, steps=[lambda step, spot: step.wait(100)])
    reg.action(Spot, "work", concurrency_key=_lane, steps=[lambda step, spot: None])
    reg.action(Spot, "parent", steps=[lambda step, spot: step.do("work")])
    app = memory_app(reg)
    app.invoke_now(Spot(0), "hold")
    first = app.invoke_now(Spot(1), "parent")  # its child queues behind "hold"
    second = app.invoke_now(Spot(2), "parent")  # its child supersedes the first's
    assert first.id is not None
    assert second.id is not None
    assert app.get(f"{first.id}.0.0").status is ActionStatus.SUPERSEDED
    assert app.recover() == 0
    drain(app)
    assert app.get(first.id).status is ActionStatus.SUCCEEDED
    assert app.get(second.id).status is ActionStatus.SUCCEEDED


def _lane(_spot: Spot) -> str:
    return "lane"


class _MovesBetweenSnapshots(StoreProxy):
    """Runs one queued message (through *app*) between the sweep's two snapshots: just
    before the first read of the queue that follows a read of the actions, or the other
    way round -- whichever order the sweep reads them in."""

    def __init__(self, inner: InMemoryWorkflowStore) -> None:
        super().__init__(inner)
        self.app: App | None = None
        self.first: str | None = None

    def _read(self, what: str) -> None:
        if self.app is None:
            return
        if self.first is None:
            self.first = what
        elif what != self.first:
            app, self.app = self.app, None
            app.run_pending(limit=1)

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        self._read("queue")
        return super().queued(action_id=action_id)

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        self._read("actions")
        return super().find_actions(query)


def test_recover_ignores_an_action_that_moved_during_the_sweep() -> None:
    """An action that advanced between the sweep's read of the actions and its read of
    the queue (its wake-up consumed, a new one queued) is not taken for stranded: no
    stale run message is re-created, and the tree finishes as usual."""
    store = _MovesBetweenSnapshots(InMemoryWorkflowStore())
    app = App(_registry(), store)
    root = app.invoke_later(Spot(1), "root")
    store.app = app
    assert app.recover() == 0
    assert store.app is None  # the action did move during the sweep
    drain(app)
    assert app.get(root.id or "").status is ActionStatus.SUCCEEDED


class _QuerySpy(InMemoryWorkflowStore):
    """Remembers every ``find_actions`` query."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[ActionQuery] = []

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        self.queries.append(query)
        return super().find_actions(query)


def test_recover_recreates_lost_after_callbacks_reading_only_actions_that_owe_them() -> None:
    """A finished action whose after-callbacks message was lost gets it back and its
    callback runs; the sweep asks the store only for finished actions still owing
    callbacks (an indexed query), never for every finished action."""
    reg = _registry()
    ran: list[str] = []
    reg.action(Spot, "noted", steps=[lambda step, spot: None]).after("succeeded")(
        lambda action, spot: ran.append(action.id)
    )
    store = _QuerySpy()
    app = App(reg, store)
    plain = [app.invoke_later(Spot(n), "leaf").id for n in range(5)]
    drain(app)
    noted = app.invoke_later(Spot(9), "noted").id or ""
    while app.get(noted).status is not ActionStatus.SUCCEEDED:
        app.run_pending(limit=1)
    assert [m.kind.value for m in store.queued()] == ["after"]
    _lose_queue(app)
    store.queries.clear()
    assert app.recover() == 1
    finished_queries = [
        q for q in store.queries if q.statuses and ActionStatus.SUCCEEDED in q.statuses
    ]
    assert finished_queries
    assert all(q.callbacks == "pending" for q in finished_queries)
    drain(app)
    assert ran == [noted]
    assert all(app.get(i or "").status is ActionStatus.SUCCEEDED for i in plain)
    assert app.recover() == 0
