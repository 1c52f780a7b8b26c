"""The invariant checkers themselves: each one fires on a crafted bad commit, names the
action, step or lane involved, and stays silent on good ones."""

from __future__ import annotations

import attrs
import pytest

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.encoding import seal
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, Record, StepRecord
from stepkernel.domain.status import ActionStatus, StepStatus
from stepkernel.ports.store import Commit
from stepkernel.testing import FakeClock
from stepkernel.testing.contract_support import action, bump, lane
from stepkernel.testing.invariants import CheckedStore, Invariants, InvariantViolation


def _store() -> tuple[CheckedStore, FakeClock]:
    clock = FakeClock(1000.0)
    return CheckedStore(InMemoryWorkflowStore(clock=clock)), clock


def _names(store: CheckedStore) -> list[str]:
    return [v.invariant for v in store.invariants.violations]


def _performing(action_id: str, lane_key: str) -> ActionRecord:
    record = action(action_id, status=ActionStatus.PERFORMING)
    assert isinstance(record, ActionRecord)
    step = StepRecord(index=0, name="first", status=StepStatus.PENDING)
    return attrs.evolve(record, concurrency_key=lane_key, steps=(step,))


def test_a_terminal_status_that_changes_is_a_lifecycle_violation() -> None:
    """succeeded -> performing names the action and the lifecycle invariant."""
    store, _ = _store()
    done = action("a1", status=ActionStatus.SUCCEEDED)
    store.commit(Commit(writes=(done,)))
    store.commit(Commit(writes=(bump(done, status=ActionStatus.PERFORMING),)))
    assert _names(store) == ["lifecycle"]
    assert store.invariants.violations[0].action_id == "a1"


def test_two_performing_actions_in_one_lane_are_reported_with_the_lane() -> None:
    """Two actions performing under one concurrency key: one-performing-per-lane."""
    store, _ = _store()
    store.commit(Commit(writes=(_performing("a1", "L"),)))
    store.commit(Commit(writes=(_performing("a2", "L"),)))
    violation = store.invariants.violations[-1]
    assert violation.invariant == "one-performing-per-lane"
    assert violation.lane == "L"


def test_a_lane_held_by_a_finished_action_is_reported() -> None:
    """A lane whose holder is finished: lane-holder-alive."""
    store, _ = _store()
    store.commit(Commit(writes=(action("a1", status=ActionStatus.FAILED), lane("L", holder="a1"))))
    assert "lane-holder-alive" in _names(store)


def test_a_wait_settled_before_its_deadline_is_reported() -> None:
    """A wait dependency settled while the store's clock is before its wake time."""
    store, _ = _store()
    base = _performing("a1", "L")
    waiting = StepRecord(
        index=0,
        name="first",
        status=StepStatus.PERFORMING,
        dependencies=("a1#0/w0",),
        wakes=(("a1#0/w0", 2000.0),),
    )
    first = attrs.evolve(base, steps=(waiting,))
    store.commit(Commit(writes=(first,)))
    assert isinstance(first, ActionRecord)
    settled = attrs.evolve(waiting, settled=frozenset({"a1#0/w0"}))
    store.commit(Commit(writes=(bump(first, steps=(settled,)),)))
    assert _names(store) == ["timer-not-early"]
    assert store.invariants.violations[0].step == 0


def test_the_same_event_committed_twice_is_reported() -> None:
    """Two commits produced by one event id: event-applied-once."""
    store, _ = _store()
    store.commit(Commit(writes=(lane("L1"),)))
    store.commit(Commit(writes=(lane("L2"),)))  # the builders seal both with event e1
    assert _names(store) == ["event-applied-once"]


def _by(record: Record, event_id: str) -> Record:
    """*record* as version 1 produced by *event_id*."""
    return seal(attrs.evolve(record), version=1, prev_digest="", event_id=event_id)


def test_several_events_in_one_commit_pass_only_as_a_group_commit() -> None:
    """Records of two step body outcomes in one commit are a group commit only when the
    commit acknowledges each outcome's run message; with one acknowledged (or another
    kind of event among them) it is event-applied-once."""
    a = _by(action("a"), "body:a:0:0")
    b = _by(action("b"), "raised:b:0:0")
    for ack, wanted in (
        (("run:a:0:0", "run:b:0:0"), []),
        (("run:a:0:0",), ["event-applied-once"]),
        (("run:a:0:0", "run:x:0:0"), ["event-applied-once"]),
    ):
        invariants = Invariants()
        invariants.check_commit({}, Commit(writes=(a, b), ack=ack), lambda key: None, 0.0)
        assert [v.invariant for v in invariants.violations] == wanted, ack
    invariants = Invariants()
    settle = _by(action("c"), "msg:settle:x")
    commit = Commit(writes=(a, settle), ack=("run:a:0:0", "settle:x"))
    invariants.check_commit({}, commit, lambda key: None, 0.0)
    assert [v.invariant for v in invariants.violations] == ["event-applied-once"]


def test_an_in_flight_action_without_a_wakeup_is_stranded() -> None:
    """At quiescence a pending action with no message, no lane place and no holder to
    wait for is reported; with a queued run message it is not."""
    invariants = Invariants()
    record = action("a1")
    records = {record.key: record} if isinstance(record, ActionRecord) else {}
    invariants.at_quiescence(records, [], healed=False)
    assert [v.invariant for v in invariants.violations] == ["no-stranded-action"]
    fine = Invariants()
    fine.at_quiescence(records, [Message.run("a1", 0, 0, 0.0)], healed=False)
    assert fine.violations == []


def test_after_healing_anything_unfinished_is_a_liveness_violation() -> None:
    """Healed and drained, a performing action or a leftover message fails liveness."""
    invariants = Invariants()
    record = action("a1", status=ActionStatus.PERFORMING)
    assert isinstance(record, ActionRecord)
    invariants.at_quiescence({record.key: record}, [], healed=True)
    assert [v.invariant for v in invariants.violations] == ["liveness"]
    with pytest.raises(InvariantViolation, match="action a1"):
        invariants.raise_if_any()


def test_good_commits_raise_nothing() -> None:
    """A record created, then moved along a lifecycle edge, one event per commit."""
    store, _ = _store()
    first = action("a1")
    store.commit(Commit(writes=(first,)))
    store.commit(Commit(writes=(bump(first, status=ActionStatus.PERFORMING),)))
    assert store.invariants.violations == []
