"""The store contract suite: every :class:`~stepkernel.ports.store.WorkflowStore` passes it.

Subclass :class:`WorkflowStoreContract` as ``TestSomething`` in your test suite and
implement :meth:`~WorkflowStoreContract.make_store` (a fresh, empty store on the clock it
is given); pytest then runs every behaviour below against your adapter::

    class TestMyStore(WorkflowStoreContract):
        def make_store(self, clock: Clock) -> WorkflowStore:
            return MyWorkflowStore(client, clock=clock)

        def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
            client.set(f"records:{key[0]}:{key[1]}", "garbage")  # backdoor

Hooks: :meth:`~WorkflowStoreContract.corrupt` writes undecodable bytes for a record
through the backend directly (the test is skipped when an adapter stores objects, not
bytes); :meth:`~WorkflowStoreContract.dispose` releases a store after each test.

The records are real domain records sealed with their digest chain
(:func:`stepkernel.domain.encoding.seal`), so adapters that verify digests on load accept
them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from stepkernel.domain.encoding import seal
from stepkernel.domain.errors import ConflictError, CorruptRecordError
from stepkernel.domain.messages import Message, MessageKind
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    AchievementRecord,
    ActionRecord,
    LaneRecord,
    Record,
    RecordKey,
    Tombstone,
    key_of,
)
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import ActionQuery, Commit, WorkflowStore
from stepkernel.testing.clock import FakeClock

__all__ = ["WorkflowStoreContract", "achievement", "action", "bump", "lane"]

LEASE = 30.0
"""Lease length (seconds) the queue tests use."""


# -- record builders ---------------------------------------------------------------------


def achievement(key: str, *, checksum: str = "sum-1", action_id: str = "a1") -> Record:
    """Version 1 of an achievement record, sealed."""
    record = AchievementRecord(key=key, checksum=checksum, action_id=action_id)
    return seal(record, version=1, prev_digest="", event_id="e1")


def lane(key: str, *, holder: str | None = None) -> Record:
    """Version 1 of a lane record, sealed."""
    return seal(LaneRecord(key=key, holder=holder), version=1, prev_digest="", event_id="e1")


def action(
    action_id: str,
    *,
    root_id: str | None = None,
    name: str = "deploy",
    actor_type: str = "Server",
    actor_key: str = "s1",
    status: ActionStatus = ActionStatus.PENDING,
    created_at: float = 0.0,
) -> Record:
    """Version 1 of a minimal action record (no steps started), sealed."""
    record = ActionRecord(
        id=action_id,
        root_id=root_id if root_id is not None else action_id,
        parent=None,
        name=name,
        actor_type=actor_type,
        actor_key=actor_key,
        arguments="[]",
        step_names=("first",),
        concurrency_key="",
        checksum_key="",
        status=status,
        created_at=created_at,
    )
    return seal(record, version=1, prev_digest="", event_id="e1")


def bump(record: Record, **changes: Any) -> Record:
    """The next version of *record* with *changes*, chained from its digest."""
    version = record.version + 1
    return seal(
        attrs.evolve(record, **changes),
        version=version,
        prev_digest=record.digest,
        event_id=f"e{version}",
    )


def _conflict(error: ConflictError) -> tuple[RecordKey, int, int]:
    """The fields a :class:`ConflictError` carries: key, expected and actual version."""
    key = error.fields["key"]
    return (key[0], key[1]), error.fields["expected"], error.fields["actual"]


def _message(message_id: str, *, at: float, action_id: str = "a1") -> Message:
    return Message(
        id=message_id, kind=MessageKind.RUN, action_id=action_id, step=0, available_at=at
    )


# -- the suite -----------------------------------------------------------------------------


class WorkflowStoreContract:
    """The behaviours every store must show; subclass as ``TestXxx`` (see module)."""

    def make_store(self, clock: Clock) -> WorkflowStore:
        """A fresh, empty store that reads time from *clock*."""
        raise NotImplementedError("subclasses return the store under test")

    def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
        """Overwrite the stored bytes of record *key* with text that does not decode."""
        pytest.skip(f"{type(store).__name__} stores objects: nothing to corrupt")

    def dispose(self, store: WorkflowStore) -> None:
        """Release *store* after a test (default: :meth:`WorkflowStore.close`)."""
        store.close()

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The fake clock the store under test reads."""
        return FakeClock()

    @pytest.fixture
    def store(self, clock: FakeClock) -> Iterator[WorkflowStore]:
        """A fresh store on :meth:`clock`, disposed after the test."""
        store = self.make_store(clock)
        try:
            yield store
        finally:
            self.dispose(store)

    # -- load ----------------------------------------------------------------------------

    def test_load_absent_keys_gives_none(self, store: WorkflowStore) -> None:
        """``load`` answers every key; keys never written map to ``None``."""
        keys = [(ACTION, "nope"), (LANE, "nope"), (ACHIEVEMENT, "nope")]
        assert store.load(keys) == dict.fromkeys(keys)

    def test_load_nothing(self, store: WorkflowStore) -> None:
        """``load`` of no keys is an empty mapping."""
        assert store.load([]) == {}

    def test_write_v1_then_load(self, store: WorkflowStore) -> None:
        """A record created at version 1 loads back equal, next to absent keys."""
        records = [action("a1"), lane("l1", holder="a1"), achievement("k1")]
        store.commit(Commit(writes=records))
        loaded = store.load([*(key_of(r) for r in records), (ACTION, "missing")])
        assert loaded == {**{key_of(r): r for r in records}, (ACTION, "missing"): None}

    def test_write_v2_over_v1(self, store: WorkflowStore) -> None:
        """A write at version ``v`` replaces the stored version ``v - 1``."""
        first = action("a1")
        store.commit(Commit(writes=[first]))
        second = bump(first, status=ActionStatus.PERFORMING, started_at=5.0)
        store.commit(Commit(writes=[second]))
        assert store.load([key_of(first)])[key_of(first)] == second

    def test_message_round_trips(self, store: WorkflowStore) -> None:
        """An enqueued message comes back from ``queued`` with every field intact."""
        message = Message.settle("a1", 2, "a1.2.0", ok=False, status="failed", at=12.5)
        store.commit(Commit(enqueue=[message]))
        assert store.queued() == [message]

    # -- conflicts -------------------------------------------------------------------------

    def test_stale_write_conflicts(self, store: WorkflowStore) -> None:
        """A write whose previous version is not the stored one raises
        :class:`ConflictError` naming the key, the expected and the actual version."""
        first = achievement("k1")
        store.commit(Commit(writes=[first]))
        third = bump(bump(first))
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(writes=[third]))
        assert _conflict(caught.value) == (
            key_of(first),
            2,
            1,
        )
        assert store.load([key_of(first)])[key_of(first)] == first

    def test_write_over_absent_record_conflicts(self, store: WorkflowStore) -> None:
        """Writing version 2 of a record that was never created conflicts (actual 0)."""
        second = bump(achievement("k1"))
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(writes=[second]))
        assert _conflict(caught.value)[1:] == (1, 0)
        assert store.load([key_of(second)])[key_of(second)] is None

    def test_conflict_changes_nothing(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A conflicting commit is all-or-nothing: its other writes, deletes, enqueues
        and acknowledgements are not applied."""
        stale = achievement("stale")
        doomed = lane("doomed")
        store.commit(Commit(writes=[stale, doomed], enqueue=[_message("kept", at=clock.now())]))
        with pytest.raises(ConflictError):
            store.commit(
                Commit(
                    writes=[achievement("fresh"), bump(bump(stale))],
                    deletes=[Tombstone(key=key_of(doomed), version=1)],
                    enqueue=[_message("new", at=clock.now())],
                    ack=["kept"],
                )
            )
        loaded = store.load([(ACHIEVEMENT, "fresh"), key_of(stale), key_of(doomed)])
        assert loaded == {
            (ACHIEVEMENT, "fresh"): None,
            key_of(stale): stale,
            key_of(doomed): doomed,
        }
        assert [m.id for m in store.queued()] == ["kept"]

    def test_creating_v1_twice_conflicts(self, store: WorkflowStore) -> None:
        """Creating a record (version 1) that already exists conflicts (expected 0)."""
        store.commit(Commit(writes=[achievement("k1", checksum="one")]))
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(writes=[achievement("k1", checksum="two")]))
        assert _conflict(caught.value) == (
            (ACHIEVEMENT, "k1"),
            0,
            1,
        )
        loaded = store.load([(ACHIEVEMENT, "k1")])[(ACHIEVEMENT, "k1")]
        assert isinstance(loaded, AchievementRecord)
        assert loaded.checksum == "one"

    def test_same_key_written_twice_in_one_commit_conflicts(self, store: WorkflowStore) -> None:
        """Every write is checked against the state before the commit: versions 1 and 2
        of one record in a single commit conflict on version 2 and store nothing."""
        first = achievement("k1")
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(writes=[first, bump(first)]))
        assert _conflict(caught.value)[1:] == (1, 0)
        assert store.load([key_of(first)])[key_of(first)] is None

    def test_guard_on_absent_record(self, store: WorkflowStore) -> None:
        """A guard of version ``0`` holds while the record is absent and conflicts once
        it exists."""
        key = (LANE, "l1")
        store.commit(Commit(guards={key: 0}, writes=[achievement("k1")]))
        store.commit(Commit(writes=[lane("l1")]))
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(guards={key: 0}, writes=[achievement("k2")]))
        assert _conflict(caught.value) == (key, 0, 1)
        assert store.load([(ACHIEVEMENT, "k2")])[(ACHIEVEMENT, "k2")] is None

    def test_guard_on_present_record(self, store: WorkflowStore) -> None:
        """A guard holds while the record is at the guarded version and conflicts once
        it moved, without writing the record it guards."""
        first = lane("l1")
        store.commit(Commit(writes=[first]))
        store.commit(Commit(guards={key_of(first): 1}, writes=[achievement("k1")]))
        store.commit(Commit(writes=[bump(first, holder="a1")]))
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(guards={key_of(first): 1}, writes=[achievement("k2")]))
        assert _conflict(caught.value) == (
            key_of(first),
            1,
            2,
        )
        assert store.load([(ACHIEVEMENT, "k2")])[(ACHIEVEMENT, "k2")] is None

    def test_delete_with_right_version(self, store: WorkflowStore) -> None:
        """A tombstone naming the stored version deletes the record."""
        first = action("a1")
        record = bump(first, status=ActionStatus.PERFORMING)
        store.commit(Commit(writes=[first]))
        store.commit(Commit(writes=[record]))
        store.commit(Commit(deletes=[Tombstone(key=key_of(record), version=2)]))
        assert store.load([key_of(record)])[key_of(record)] is None
        assert store.find_actions(ActionQuery()) == []

    def test_delete_with_wrong_version_conflicts(self, store: WorkflowStore) -> None:
        """A tombstone naming another version conflicts and deletes nothing."""
        record = achievement("k1")
        store.commit(Commit(writes=[record]))
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(deletes=[Tombstone(key=key_of(record), version=3)]))
        assert _conflict(caught.value) == (
            key_of(record),
            3,
            1,
        )
        assert store.load([key_of(record)])[key_of(record)] == record

    def test_deleted_record_can_be_created_again(self, store: WorkflowStore) -> None:
        """After a delete the key is absent: version 1 creates it anew."""
        record = achievement("k1", checksum="one")
        store.commit(Commit(writes=[record]))
        store.commit(Commit(deletes=[Tombstone(key=key_of(record), version=1)]))
        again = achievement("k1", checksum="two")
        store.commit(Commit(writes=[again]))
        assert store.load([key_of(again)])[key_of(again)] == again

    # -- queue -----------------------------------------------------------------------------

    def test_enqueue_is_idempotent_by_id(self, store: WorkflowStore, clock: FakeClock) -> None:
        """Enqueueing an id already queued keeps the queued message."""
        original = _message("m1", at=clock.now())
        store.commit(Commit(enqueue=[original]))
        store.commit(Commit(enqueue=[_message("m1", at=clock.now() + 99, action_id="other")]))
        assert store.queued() == [original]

    def test_lease_only_due_messages(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``lease`` hands out messages whose ``available_at`` has come, not later ones."""
        now = clock.now()
        store.commit(Commit(enqueue=[_message("due", at=now), _message("later", at=now + 10)]))
        deliveries = store.lease(worker="w1", limit=10, lease_seconds=LEASE)
        assert [d.message.id for d in deliveries] == ["due"]
        assert deliveries[0].deliveries == 1
        assert deliveries[0].lease_until == now + LEASE
        assert deliveries[0].message == _message("due", at=now)

    def test_lease_earliest_first_up_to_limit(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``lease`` hands out at most *limit* messages, earliest ``available_at`` first."""
        now = clock.now()
        store.commit(
            Commit(
                enqueue=[
                    _message("m3", at=now - 1),
                    _message("m1", at=now - 3),
                    _message("m2", at=now - 2),
                ]
            )
        )
        first = store.lease(worker="w1", limit=2, lease_seconds=LEASE)
        assert [d.message.id for d in first] == ["m1", "m2"]
        rest = store.lease(worker="w1", limit=2, lease_seconds=LEASE)
        assert [d.message.id for d in rest] == ["m3"]

    def test_delayed_message_becomes_due(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A delayed message is leased once the store's clock reaches ``available_at``."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now() + 60)]))
        assert store.lease(worker="w1", limit=1, lease_seconds=LEASE) == []
        clock.advance(60)
        assert [d.message.id for d in store.lease(worker="w1", limit=1, lease_seconds=LEASE)] == [
            "m1"
        ]

    def test_lease_is_exclusive_until_it_expires(
        self, store: WorkflowStore, clock: FakeClock
    ) -> None:
        """A leased message is not leased again before its lease expires; afterwards it
        is delivered again with ``deliveries == 2``."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now())]))
        assert len(store.lease(worker="w1", limit=1, lease_seconds=LEASE)) == 1
        clock.advance(LEASE - 1)
        assert store.lease(worker="w2", limit=1, lease_seconds=LEASE) == []
        clock.advance(1)
        again = store.lease(worker="w2", limit=1, lease_seconds=LEASE)
        assert [(d.message.id, d.deliveries) for d in again] == [("m1", 2)]

    def test_queued_includes_leased_messages(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A leased message stays queued until it is acknowledged."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        assert [m.id for m in store.queued()] == ["m1"]

    def test_release_makes_deliverable_at_once(
        self, store: WorkflowStore, clock: FakeClock
    ) -> None:
        """``release`` gives the worker's lease back: the message can be leased at once."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.release(["m1"], worker="w1")
        again = store.lease(worker="w2", limit=1, lease_seconds=LEASE)
        assert [(d.message.id, d.deliveries) for d in again] == [("m1", 2)]

    def test_release_ignores_other_workers(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``release`` by a worker that does not hold the lease changes nothing."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.release(["m1", "unknown"], worker="w2")
        assert store.lease(worker="w2", limit=1, lease_seconds=LEASE) == []

    def test_extend_pushes_expiry(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``extend`` moves the holder's lease to ``now + lease_seconds``."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        clock.advance(LEASE - 1)
        store.extend(["m1"], worker="w1", lease_seconds=LEASE)
        assert store.next_due() == clock.now() + LEASE
        clock.advance(LEASE - 1)
        assert store.lease(worker="w2", limit=1, lease_seconds=LEASE) == []
        clock.advance(1)
        assert len(store.lease(worker="w2", limit=1, lease_seconds=LEASE)) == 1

    def test_extend_ignores_other_workers(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``extend`` by a worker that does not hold the lease changes nothing."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.extend(["m1"], worker="w2", lease_seconds=10 * LEASE)
        assert store.next_due() == clock.now() + LEASE

    def test_ack_in_commit_removes(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A message acknowledged in a commit leaves the queue with the commit."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now())]))
        (delivery,) = store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.commit(Commit(writes=[achievement("k1")], ack=[delivery.message.id]))
        assert store.queued() == []
        clock.advance(2 * LEASE)
        assert store.lease(worker="w1", limit=1, lease_seconds=LEASE) == []

    def test_ack_removes(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``ack`` removes messages outside a commit; unknown ids are not an error."""
        store.commit(Commit(enqueue=[_message("m1", at=clock.now()), _message("m2", at=0)]))
        store.ack(["m1", "unknown"])
        store.commit(Commit(ack=["unknown"]))
        assert [m.id for m in store.queued()] == ["m2"]

    def test_lease_with_ids(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``lease(ids=...)`` considers only the named messages, still only due and
        unleased ones, in the order named."""
        now = clock.now()
        store.commit(
            Commit(
                enqueue=[
                    _message("a", at=now),
                    _message("b", at=now),
                    _message("c", at=now),
                    _message("later", at=now + 5),
                ]
            )
        )
        store.lease(worker="w1", limit=1, lease_seconds=LEASE, ids=["a"])
        got = store.lease(
            worker="w2", limit=10, lease_seconds=LEASE, ids=["c", "a", "later", "unknown"]
        )
        assert [d.message.id for d in got] == ["c"]
        limited = store.lease(worker="w2", limit=0, lease_seconds=LEASE, ids=["b"])
        assert limited == []

    def test_next_due(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``next_due`` is ``None`` for an empty queue, else the earliest moment a
        message becomes deliverable: its ``available_at``, or its lease expiry."""
        now = clock.now()
        assert store.next_due() is None
        store.commit(Commit(enqueue=[_message("m1", at=now + 10), _message("m2", at=now)]))
        assert store.next_due() == now
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        assert store.next_due() == now + 10
        store.ack(["m1"])
        assert store.next_due() == now + LEASE

    def test_queued_per_action(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``queued(action_id=...)`` lists only that action's messages."""
        now = clock.now()
        store.commit(
            Commit(
                enqueue=[
                    _message("x1", at=now, action_id="x"),
                    _message("y1", at=now, action_id="y"),
                    _message("x2", at=now + 1, action_id="x"),
                ]
            )
        )
        assert sorted(m.id for m in store.queued(action_id="x")) == ["x1", "x2"]
        assert store.queued(action_id="z") == []
        assert sorted(m.id for m in store.queued()) == ["x1", "x2", "y1"]

    # -- find_actions ----------------------------------------------------------------------

    def _actions(self, store: WorkflowStore) -> None:
        performing = ActionStatus.PERFORMING
        store.commit(
            Commit(
                writes=[
                    action("r1", created_at=1.0),
                    action("r1.0.0", root_id="r1", name="dns", created_at=2.0),
                    action("r1.0.1", root_id="r1", status=performing, created_at=2.0),
                    action("r2", actor_key="s2", status=performing, created_at=0.5),
                    action("r3", actor_type="Car", name="dns", created_at=3.0),
                    lane("lane"),
                    achievement("ach"),
                ]
            )
        )

    def test_find_actions_orders_by_creation_then_id(self, store: WorkflowStore) -> None:
        """Without filters every action is found (no lanes or achievements), ordered by
        ``created_at`` then id."""
        self._actions(store)
        found = [r.id for r in store.find_actions(ActionQuery())]
        assert found == ["r2", "r1", "r1.0.0", "r1.0.1", "r3"]

    def test_find_actions_by_root(self, store: WorkflowStore) -> None:
        """``root_id`` finds a whole tree."""
        self._actions(store)
        found = [r.id for r in store.find_actions(ActionQuery(root_id="r1"))]
        assert found == ["r1", "r1.0.0", "r1.0.1"]

    def test_find_actions_by_statuses(self, store: WorkflowStore) -> None:
        """``statuses`` keeps actions in any of them; an empty set finds nothing."""
        self._actions(store)
        performing = frozenset({ActionStatus.PERFORMING})
        assert [r.id for r in store.find_actions(ActionQuery(statuses=performing))] == [
            "r2",
            "r1.0.1",
        ]
        assert store.find_actions(ActionQuery(statuses=frozenset())) == []

    def test_find_actions_follows_status_changes(self, store: WorkflowStore) -> None:
        """A status written in a later version is what ``statuses`` filters on."""
        first = action("a1")
        store.commit(Commit(writes=[first]))
        store.commit(Commit(writes=[bump(first, status=ActionStatus.PERFORMING)]))
        pending = ActionQuery(statuses=frozenset({ActionStatus.PENDING}))
        performing = ActionQuery(statuses=frozenset({ActionStatus.PERFORMING}))
        assert store.find_actions(pending) == []
        assert [r.id for r in store.find_actions(performing)] == ["a1"]

    def test_find_actions_by_actor_and_name(self, store: WorkflowStore) -> None:
        """``actor_type``, ``actor_key`` and ``name`` combine with AND."""
        self._actions(store)
        by_actor = ActionQuery(actor_type="Server", actor_key="s1")
        assert [r.id for r in store.find_actions(by_actor)] == ["r1", "r1.0.0", "r1.0.1"]
        by_name = ActionQuery(name="dns")
        assert [r.id for r in store.find_actions(by_name)] == ["r1.0.0", "r3"]
        both = ActionQuery(actor_type="Car", name="dns")
        assert [r.id for r in store.find_actions(both)] == ["r3"]

    def test_find_actions_limit(self, store: WorkflowStore) -> None:
        """``limit`` keeps the first matches in order."""
        self._actions(store)
        assert [r.id for r in store.find_actions(ActionQuery(limit=2))] == ["r2", "r1"]
        assert store.find_actions(ActionQuery(limit=0)) == []

    def test_find_actions_returns_records(self, store: WorkflowStore) -> None:
        """Found actions equal what ``load`` returns."""
        record = action("a1", created_at=4.0)
        store.commit(Commit(writes=[record]))
        assert store.find_actions(ActionQuery(root_id="a1")) == [record]

    # -- corruption --------------------------------------------------------------------------

    def test_corrupt_record_raises(self, store: WorkflowStore) -> None:
        """Stored bytes that do not decode raise :class:`CorruptRecordError` naming the
        key, not a driver or JSON error."""
        record = achievement("k1")
        store.commit(Commit(writes=[record]))
        self.corrupt(store, key_of(record))
        with pytest.raises(CorruptRecordError) as caught:
            store.load([key_of(record)])
        assert tuple(caught.value.fields["key"]) == key_of(record)

    # -- concurrency -------------------------------------------------------------------------

    def test_concurrent_increments_lose_no_update(self, store: WorkflowStore) -> None:
        """Four threads incrementing one record with retry-on-conflict end with the exact
        count: optimistic versions lose no update."""
        key = (ACHIEVEMENT, "counter")
        store.commit(Commit(writes=[achievement("counter", checksum="0")]))
        threads, per_thread = 4, 25
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(per_thread):
                    while True:
                        current = store.load([key])[key]
                        assert isinstance(current, AchievementRecord)
                        nxt = bump(current, checksum=str(int(current.checksum) + 1))
                        try:
                            store.commit(Commit(writes=[nxt]))
                        except ConflictError:
                            continue
                        break
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        final = store.load([key])[key]
        assert isinstance(final, AchievementRecord)
        assert final.checksum == str(threads * per_thread)
        assert final.version == 1 + threads * per_thread
