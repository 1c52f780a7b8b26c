"""The record half of the store contract: loads, versioned commits, guards, deletes,
queries, corruption and concurrent commits."""

from __future__ import annotations

import threading

import pytest

from stepkernel.domain.errors import ConflictError, CorruptRecordError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    AchievementRecord,
    Tombstone,
    key_of,
)
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.store import ActionQuery, Commit, WorkflowStore
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.contract_support import (
    ContractBase,
    achievement,
    action,
    bump,
    conflict_of,
    increment,
    lane,
    queued_message,
)


class RecordContract(ContractBase):
    """Records: what every store must do with them."""

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
        assert conflict_of(caught.value) == (
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
        assert conflict_of(caught.value)[1:] == (1, 0)
        assert store.load([key_of(second)])[key_of(second)] is None

    def test_conflict_changes_nothing(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A conflicting commit is all-or-nothing: its other writes, deletes, enqueues
        and acknowledgements are not applied."""
        stale = achievement("stale")
        doomed = lane("doomed")
        store.commit(
            Commit(writes=[stale, doomed], enqueue=[queued_message("kept", at=clock.now())])
        )
        with pytest.raises(ConflictError):
            store.commit(
                Commit(
                    writes=[achievement("fresh"), bump(bump(stale))],
                    deletes=[Tombstone(key=key_of(doomed), version=1)],
                    enqueue=[queued_message("new", at=clock.now())],
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
        assert conflict_of(caught.value) == (
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
        assert conflict_of(caught.value)[1:] == (1, 0)
        assert store.load([key_of(first)])[key_of(first)] is None

    def test_guard_on_absent_record(self, store: WorkflowStore) -> None:
        """A guard of version ``0`` holds while the record is absent and conflicts once
        it exists."""
        key = (LANE, "l1")
        store.commit(Commit(guards={key: 0}, writes=[achievement("k1")]))
        store.commit(Commit(writes=[lane("l1")]))
        with pytest.raises(ConflictError) as caught:
            store.commit(Commit(guards={key: 0}, writes=[achievement("k2")]))
        assert conflict_of(caught.value) == (key, 0, 1)
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
        assert conflict_of(caught.value) == (
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
        assert conflict_of(caught.value) == (
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

    def test_find_actions_by_callbacks_state(self, store: WorkflowStore) -> None:
        """``callbacks`` filters on the after-callbacks state and follows its changes
        (what the recovery sweep asks: finished actions still owing callbacks), alone,
        with ``statuses`` and with ``limit``."""
        finished = ActionStatus.SUCCEEDED
        created = [action(f"o{n}", status=finished, created_at=float(n)) for n in range(3)]
        first_done = action("done", status=finished, created_at=1.5)
        store.commit(Commit(writes=[*created, first_done, action("idle")]))
        owing = [bump(record, callbacks="pending") for record in created]
        store.commit(Commit(writes=[*owing, bump(first_done, callbacks="ok")]))
        pending = ActionQuery(callbacks="pending")
        assert [r.id for r in store.find_actions(pending)] == ["o0", "o1", "o2"]
        with_status = ActionQuery(statuses=frozenset({finished}), callbacks="pending", limit=2)
        assert [r.id for r in store.find_actions(with_status)] == ["o0", "o1"]
        assert [r.id for r in store.find_actions(ActionQuery(callbacks="ok"))] == ["done"]
        store.commit(Commit(writes=[bump(owing[1], callbacks="failed")]))
        assert [r.id for r in store.find_actions(pending)] == ["o0", "o2"]
        store.commit(Commit(deletes=[Tombstone(key=key_of(owing[0]), version=2)]))
        assert [r.id for r in store.find_actions(pending)] == ["o2"]
        assert [r.id for r in store.find_actions(ActionQuery(callbacks="none"))] == ["idle"]

    def test_find_actions_created_before(self, store: WorkflowStore) -> None:
        """``created_before`` keeps actions created strictly before it, alone and
        combined with ``statuses`` or another field."""
        self._actions(store)
        before = ActionQuery(created_before=2.0)
        assert [r.id for r in store.find_actions(before)] == ["r2", "r1"]
        performing = frozenset({ActionStatus.PERFORMING})
        with_status = ActionQuery(statuses=performing, created_before=2.5)
        assert [r.id for r in store.find_actions(with_status)] == ["r2", "r1.0.1"]
        with_root = ActionQuery(root_id="r1", created_before=2.0)
        assert [r.id for r in store.find_actions(with_root)] == ["r1"]
        assert store.find_actions(ActionQuery(created_before=0.5)) == []

    def test_count_actions_per_status(self, store: WorkflowStore) -> None:
        """``count_actions`` counts actions (not lanes or achievements) per status and
        follows status changes and deletes."""
        assert store.count_actions() == {}
        self._actions(store)
        pending, performing = ActionStatus.PENDING, ActionStatus.PERFORMING
        assert store.count_actions() == {pending: 3, performing: 2}
        [r3] = store.find_actions(ActionQuery(actor_type="Car"))
        store.commit(Commit(writes=[bump(r3, status=performing)]))
        assert store.count_actions() == {pending: 2, performing: 3}
        r1 = store.find_actions(ActionQuery(root_id="r1"))[0]
        store.commit(Commit(deletes=[Tombstone(key=key_of(r1), version=r1.version)]))
        assert store.count_actions() == {pending: 1, performing: 3}

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
                increment(store, key, per_thread)
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
