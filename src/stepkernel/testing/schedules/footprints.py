"""What each choice of a schedule touches, observed rather than declared.

A :class:`Footprint` is the set of places (:data:`Place`) one choice read and wrote.
While a choice runs, :class:`RecordingStore` -- the in-memory store under a
:class:`~stepkernel.testing.schedules.World` -- notes the record keys it reads and
writes and the message ids it enqueues, leases or acknowledges, and
:class:`RecordingRandom` notes every draw from the app's random generator.  The search
(:mod:`stepkernel.testing.schedules.search`) lets two deliveries commute when
:meth:`Footprint.commutes_with` says so.  A call whose reach the store cannot name
(leasing without ids, listing the queue or actions) marks the footprint ``everything``,
which commutes with nothing.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence

from attrs import frozen

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, Record, RecordKey, key_of
from stepkernel.ports.store import ActionQuery, Commit, Delivery
from stepkernel.testing.clock import FakeClock

Place = tuple[str, ...]
"""A piece of state a delivery may touch: ``("record", kind, key)``, ``("message",
id)`` or ``("random",)``."""


@frozen
class Footprint:
    """What one choice read and wrote; ``everything`` when unknown (commutes with
    nothing)."""

    reads: frozenset[Place] = frozenset()
    writes: frozenset[Place] = frozenset()
    everything: bool = False

    def commutes_with(self, other: Footprint) -> bool:
        if self.everything or other.everything:
            return False
        return not (self.writes & (other.reads | other.writes) or other.writes & self.reads)


def _records(keys: Iterable[RecordKey]) -> set[Place]:
    return {("record", *key) for key in keys}


def _messages(ids: Iterable[str]) -> set[Place]:
    return {("message", i) for i in ids}


class RecordingStore(InMemoryWorkflowStore):
    """The in-memory store, noting what the calls since :meth:`footprint` touched
    (``all_records``, the backdoor, is not noted)."""

    def __init__(self, *, clock: FakeClock) -> None:
        self.reads: set[Place] = set()
        self.writes: set[Place] = set()
        self.everything = False
        super().__init__(clock=clock)

    def footprint(self) -> Footprint:
        """What was touched since the last call, which starts afresh."""
        done = Footprint(frozenset(self.reads), frozenset(self.writes), self.everything)
        self.reads, self.writes, self.everything = set(), set(), False
        return done

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        self.reads |= _records(keys)
        return super().load(keys)

    def commit(self, commit: Commit) -> None:
        self.reads |= _records(commit.guards)
        self.writes |= _records(key_of(r) for r in commit.writes)
        self.writes |= _records(t.key for t in commit.deletes)
        self.writes |= _messages(m.id for m in commit.enqueue) | _messages(commit.ack)
        super().commit(commit)

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        self.everything |= ids is None
        self.writes |= _messages(ids or ())
        return super().lease(worker=worker, limit=limit, lease_seconds=lease_seconds, ids=ids)

    def ack(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        self.writes |= _messages(ids)
        super().ack(ids)

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        ids = list(ids)
        self.writes |= _messages(ids)
        super().release(ids, worker=worker)

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        ids = list(ids)
        self.writes |= _messages(ids)
        super().extend(ids, worker=worker, lease_seconds=lease_seconds)

    def next_due(self) -> float | None:
        self.everything = True
        return super().next_due()

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        self.everything = True
        return super().queued(action_id=action_id)

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        self.everything = True
        return super().find_actions(query)


class RecordingRandom(random.Random):
    """A seeded generator whose draws count as writes to ``("random",)``: the order of
    two deliveries that both draw matters."""

    def __init__(self, seed: int, store: RecordingStore) -> None:
        super().__init__(seed)
        self._store = store

    def random(self) -> float:
        self._store.writes.add(("random",))
        return super().random()
