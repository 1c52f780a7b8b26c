"""The queue half of the store contract: enqueue, leases, redelivery, release, extend,
acknowledgement and due times."""

from __future__ import annotations

from stepkernel.ports.store import Commit, WorkflowStore
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.contract_support import (
    LEASE,
    ContractBase,
    achievement,
    queued_message,
)


class QueueContract(ContractBase):
    """Messages: what every store must do with them."""

    # -- queue -----------------------------------------------------------------------------

    def test_enqueue_is_idempotent_by_id(self, store: WorkflowStore, clock: FakeClock) -> None:
        """Enqueueing an id already queued keeps the queued message."""
        original = queued_message("m1", at=clock.now())
        store.commit(Commit(enqueue=[original]))
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now() + 99, action_id="other")]))
        assert store.queued() == [original]

    def test_lease_only_due_messages(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``lease`` hands out messages whose ``available_at`` has come, not later ones."""
        now = clock.now()
        store.commit(
            Commit(enqueue=[queued_message("due", at=now), queued_message("later", at=now + 10)])
        )
        deliveries = store.lease(worker="w1", limit=10, lease_seconds=LEASE)
        assert [d.message.id for d in deliveries] == ["due"]
        assert deliveries[0].deliveries == 1
        assert deliveries[0].lease_until == now + LEASE
        assert deliveries[0].message == queued_message("due", at=now)

    def test_lease_earliest_first_up_to_limit(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``lease`` hands out at most *limit* messages, earliest ``available_at`` first."""
        now = clock.now()
        store.commit(
            Commit(
                enqueue=[
                    queued_message("m3", at=now - 1),
                    queued_message("m1", at=now - 3),
                    queued_message("m2", at=now - 2),
                ]
            )
        )
        first = store.lease(worker="w1", limit=2, lease_seconds=LEASE)
        assert [d.message.id for d in first] == ["m1", "m2"]
        rest = store.lease(worker="w1", limit=2, lease_seconds=LEASE)
        assert [d.message.id for d in rest] == ["m3"]

    def test_delayed_message_becomes_due(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A delayed message is leased once the store's clock reaches ``available_at``."""
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now() + 60)]))
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
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now())]))
        assert len(store.lease(worker="w1", limit=1, lease_seconds=LEASE)) == 1
        clock.advance(LEASE - 1)
        assert store.lease(worker="w2", limit=1, lease_seconds=LEASE) == []
        clock.advance(1)
        again = store.lease(worker="w2", limit=1, lease_seconds=LEASE)
        assert [(d.message.id, d.deliveries) for d in again] == [("m1", 2)]

    def test_queued_includes_leased_messages(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A leased message stays queued until it is acknowledged."""
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        assert [m.id for m in store.queued()] == ["m1"]

    def test_release_makes_deliverable_at_once(
        self, store: WorkflowStore, clock: FakeClock
    ) -> None:
        """``release`` gives the worker's lease back: the message can be leased at once."""
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.release(["m1"], worker="w1")
        again = store.lease(worker="w2", limit=1, lease_seconds=LEASE)
        assert [(d.message.id, d.deliveries) for d in again] == [("m1", 2)]

    def test_release_ignores_other_workers(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``release`` by a worker that does not hold the lease changes nothing."""
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.release(["m1", "unknown"], worker="w2")
        assert store.lease(worker="w2", limit=1, lease_seconds=LEASE) == []

    def test_extend_pushes_expiry(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``extend`` moves the holder's lease to ``now + lease_seconds``."""
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now())]))
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
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now())]))
        store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.extend(["m1"], worker="w2", lease_seconds=10 * LEASE)
        assert store.next_due() == clock.now() + LEASE

    def test_ack_in_commit_removes(self, store: WorkflowStore, clock: FakeClock) -> None:
        """A message acknowledged in a commit leaves the queue with the commit."""
        store.commit(Commit(enqueue=[queued_message("m1", at=clock.now())]))
        (delivery,) = store.lease(worker="w1", limit=1, lease_seconds=LEASE)
        store.commit(Commit(writes=[achievement("k1")], ack=[delivery.message.id]))
        assert store.queued() == []
        clock.advance(2 * LEASE)
        assert store.lease(worker="w1", limit=1, lease_seconds=LEASE) == []

    def test_ack_removes(self, store: WorkflowStore, clock: FakeClock) -> None:
        """``ack`` removes messages outside a commit; unknown ids are not an error."""
        store.commit(
            Commit(enqueue=[queued_message("m1", at=clock.now()), queued_message("m2", at=0)])
        )
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
                    queued_message("a", at=now),
                    queued_message("b", at=now),
                    queued_message("c", at=now),
                    queued_message("later", at=now + 5),
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
        store.commit(
            Commit(enqueue=[queued_message("m1", at=now + 10), queued_message("m2", at=now)])
        )
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
                    queued_message("x1", at=now, action_id="x"),
                    queued_message("y1", at=now, action_id="y"),
                    queued_message("x2", at=now + 1, action_id="x"),
                ]
            )
        )
        assert sorted(m.id for m in store.queued(action_id="x")) == ["x1", "x2"]
        assert store.queued(action_id="z") == []
        assert sorted(m.id for m in store.queued()) == ["x1", "x2", "y1"]
