"""The dead-letter part of the store contract: a queued message whose stored text does
not decode is moved out of the queue by the lease that finds it, kept for an operator,
and never blocks the messages behind it (see :class:`~stepkernel.ports.store.DeadLetter`).

These tests need the :meth:`~stepkernel.testing.contract_support.ContractBase.corrupt_message`
hook; they are skipped for stores that keep messages as objects (nothing can corrupt them).
"""

from __future__ import annotations

from stepkernel.ports.store import Commit, DeadLetter, WorkflowStore
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.contract_support import LEASE, ContractBase, queued_message

GARBAGE = '{"torn": '
"""Stored text that is no message."""


class DeadLetterContract(ContractBase):
    """Undecodable messages: moved aside, listed, dropped; the queue goes on."""

    def _two_queued_one_corrupt(self, store: WorkflowStore, clock: FakeClock) -> None:
        now = clock.now()
        store.commit(
            Commit(
                enqueue=[
                    queued_message("bad", at=now - 1, action_id="a1"),
                    queued_message("good", at=now, action_id="a2"),
                ]
            )
        )
        self.corrupt_message(store, "bad", GARBAGE)

    def test_undecodable_message_is_moved_to_the_dead_letters(
        self, store: WorkflowStore, clock: FakeClock
    ) -> None:
        """A lease that picks a message whose text does not decode hands out the rest
        of the batch and moves that one, text and all, to the dead letters: it is no
        longer queued, and no later lease meets it again."""
        self._two_queued_one_corrupt(store, clock)
        clock.advance(0.123457)  # a store time with many digits: kept exactly
        leased = store.lease(worker="w1", limit=5, lease_seconds=LEASE)
        assert [d.message.id for d in leased] == ["good"]
        [letter] = store.dead_letters()
        assert isinstance(letter, DeadLetter)
        assert (letter.message_id, letter.data, letter.dead_at) == ("bad", GARBAGE, clock.now())
        assert letter.action_id in ("a1", None)
        assert letter.reason
        assert letter.deliveries == 1
        assert [m.id for m in store.queued()] == ["good"]
        clock.advance(2 * LEASE)
        assert [d.message.id for d in store.lease(worker="w2", limit=5, lease_seconds=LEASE)] == [
            "good"
        ]
        assert [letter.message_id for letter in store.dead_letters()] == ["bad"]

    def test_lease_by_ids_moves_undecodable_messages_too(
        self, store: WorkflowStore, clock: FakeClock
    ) -> None:
        """``lease(ids=...)`` treats an undecodable message the same way."""
        self._two_queued_one_corrupt(store, clock)
        leased = store.lease(worker="w1", limit=5, lease_seconds=LEASE, ids=["bad", "good"])
        assert [d.message.id for d in leased] == ["good"]
        assert [letter.message_id for letter in store.dead_letters()] == ["bad"]

    def test_queued_leaves_out_undecodable_messages(
        self, store: WorkflowStore, clock: FakeClock
    ) -> None:
        """``queued`` (inspection, the recovery sweep) lists only the messages that
        decode, instead of failing on the first that does not."""
        self._two_queued_one_corrupt(store, clock)
        assert [m.id for m in store.queued()] == ["good"]
        assert [m.id for m in store.queued(action_id="a1")] == []
        assert store.dead_letters() == []  # moved by a lease, not by looking

    def test_dead_letters_are_dropped_by_id(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``drop_dead_letters`` forgets the ids given and says how many it found;
        unknown ids are ignored."""
        self._two_queued_one_corrupt(store, clock)
        store.lease(worker="w1", limit=5, lease_seconds=LEASE)
        assert store.drop_dead_letters(["bad", "unknown"]) == 1
        assert store.dead_letters() == []
        assert store.drop_dead_letters(["bad"]) == 0

    def test_an_id_can_be_queued_again_after_it_died(
        self, store: WorkflowStore, clock: FakeClock
    ) -> None:
        """A message enqueued again under a dead letter's id is an ordinary message;
        should it die too, the newer dead letter replaces the older."""
        self._two_queued_one_corrupt(store, clock)
        store.lease(worker="w1", limit=5, lease_seconds=LEASE)
        store.commit(Commit(enqueue=[queued_message("bad", at=clock.now(), action_id="a1")]))
        [again] = store.lease(worker="w2", limit=5, lease_seconds=LEASE, ids=["bad"])
        assert again.message.action_id == "a1"
        store.release(["bad"], worker="w2")
        clock.advance(1)
        self.corrupt_message(store, "bad", "[]")
        assert store.lease(worker="w3", limit=5, lease_seconds=LEASE, ids=["bad"]) == []
        [letter] = store.dead_letters()
        assert (letter.data, letter.dead_at) == ("[]", clock.now())
