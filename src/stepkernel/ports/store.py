"""The store port: records, the message queue and its leases, committed together.

Every adapter (memory, SQL, Redis, your own) meets this contract; the suite in
:mod:`stepkernel.testing.contract` checks it.

Records
    ``load(keys)`` answers *every* key: the record, or ``None`` when nothing is stored.
    Stored text that does not decode raises :class:`CorruptRecordError` for that key.

Commits
    ``commit(c)`` applies, atomically and all-or-nothing: every write (a record at
    version ``v`` replaces version ``v - 1``, or creates the record when ``v == 1``),
    every delete (the stored version must equal the tombstone's), every guard (the
    stored version must still equal the one read, ``0`` meaning absent), the enqueued
    messages and the acknowledged message ids.  If any version moved it raises
    :class:`ConflictError` (fields ``key``, ``expected``, ``actual``) and changes
    nothing.  Enqueueing an id already queued keeps the queued one (idempotent);
    acknowledging an id that is not queued is not an error.

Queue
    ``lease`` hands out messages whose ``available_at`` has come (by the store's clock)
    and that are not leased, or whose lease expired; each is leased to *worker* for
    *lease_seconds*.  A message stays queued until acknowledged in a commit or with
    ``ack``: a worker that dies simply lets its lease run out and the message is
    delivered again (``deliveries`` counts how often).  ``release`` gives leases back at
    once (graceful shutdown); ``extend`` keeps a long-running lease alive.
    A message whose stored text does not decode is never handed out and never blocks
    the queue: ``lease`` moves it, in the transaction that found it, to the store's
    *dead letters* (:class:`DeadLetter`: its id, action, raw text and the reason) and
    leases the rest of the batch; ``queued`` leaves such messages out.  Nothing of it is
    lost: ``dead_letters`` lists them for an operator (``stepkernel dead-letters``),
    ``drop_dead_letters`` forgets them, and the recovery sweep gives the action a fresh
    wake-up.  A store that keeps messages as objects (memory) never has any.
    ``wait_for_work`` is how an idle worker waits before leasing again: it may return
    early, never late (the default waits in real time: a polling worker).

Errors
    Driver exceptions never escape an adapter: they become :class:`StoreUnavailableError`
    (or :class:`ConflictError` for a lost race), raised ``from`` the driver error.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from attrs import field, frozen

from stepkernel.domain.errors import InvalidInputError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, Record, RecordKey, Tombstone
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


@frozen
class Commit:
    """One atomic transition: record writes, deletes, guards, messages in and out."""

    writes: tuple[Record, ...] = field(default=(), converter=_tuple)
    deletes: tuple[Tombstone, ...] = field(default=(), converter=_tuple)
    guards: Mapping[RecordKey, int] = field(factory=dict)
    enqueue: tuple[Message, ...] = field(default=(), converter=_tuple)
    ack: tuple[str, ...] = field(default=(), converter=_tuple)

    @property
    def empty(self) -> bool:
        return not (self.writes or self.deletes or self.enqueue or self.ack)


@frozen
class Delivery:
    """A leased message: deliver it, then acknowledge it in the commit it causes."""

    message: Message
    deliveries: int
    lease_until: float


@frozen
class DeadLetter:
    """A queued message whose stored text did not decode, moved out of the queue.

    ``data`` is the stored text exactly as found (for diagnosis or hand repair),
    ``reason`` why it did not decode, ``dead_at`` the store time of the move and
    ``deliveries`` how often it had been leased before.  ``action_id`` is the action the
    queue row named (``None`` where the store keeps it only inside the text)."""

    message_id: str
    action_id: str | None
    data: str
    reason: str
    dead_at: float
    deliveries: int


def _not_nan(_instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and math.isnan(value):
        raise InvalidInputError(f"{attribute.name} must be a number, not NaN")


@frozen
class ActionQuery:
    """Filters for :meth:`WorkflowStore.find_actions` (all optional, combined with AND)."""

    root_id: str | None = None
    statuses: frozenset[ActionStatus] | None = None
    actor_type: str | None = None
    actor_key: str | None = None
    name: str | None = None
    callbacks: str | None = None
    """The after-callbacks state (``"none"``, ``"pending"``, ``"ok"``, ``"failed"``);
    stores index ``"pending"`` so the recovery sweep finds finished actions still owing
    callbacks without reading every finished action."""
    created_before: float | None = field(default=None, validator=_not_nan)
    """Only actions created strictly before this store time (with ``statuses``, an
    indexed range: what pruning old trees reads); NaN is refused."""
    limit: int | None = None

    def matches(self, record: ActionRecord) -> bool:
        """Whether *record* passes every filter given (``limit`` aside)."""
        return (
            (self.root_id is None or record.root_id == self.root_id)
            and (self.statuses is None or record.status in self.statuses)
            and (self.actor_type is None or record.actor_type == self.actor_type)
            and (self.actor_key is None or record.actor_key == self.actor_key)
            and (self.name is None or record.name == self.name)
            and (self.callbacks is None or record.callbacks == self.callbacks)
            and (self.created_before is None or record.created_at < self.created_before)
        )


class WorkflowStore(ABC):
    """Durable records plus a leased message queue, committed atomically (see module)."""

    clock: Clock

    def now(self) -> float:
        """The store's time: timers, leases and timeouts are decided by it."""
        return self.clock.now()

    @abstractmethod
    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        """The stored record for every key in *keys* (``None`` when absent)."""

    @abstractmethod
    def commit(self, commit: Commit) -> None:
        """Apply *commit* atomically or raise :class:`ConflictError` changing nothing."""

    @abstractmethod
    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to *limit* due messages (only those in *ids*, when given), oldest
        ``available_at`` first."""

    @abstractmethod
    def ack(self, ids: Iterable[str]) -> None:
        """Remove the messages *ids* from the queue (outside a commit)."""

    @abstractmethod
    def release(self, ids: Iterable[str], *, worker: str) -> None:
        """Give back *worker*'s leases on *ids*: they are deliverable again at once."""

    @abstractmethod
    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        """Push *worker*'s leases on *ids* to ``now + lease_seconds``."""

    @abstractmethod
    def next_due(self) -> float | None:
        """When the earliest queued message becomes deliverable (its ``available_at``, or
        its lease expiry if leased); ``None`` when the queue is empty."""

    @abstractmethod
    def queued(self, *, action_id: str | None = None) -> list[Message]:
        """Queued messages (leased or not), for one action or all; for inspection,
        recovery and tests, not for the hot path."""

    @abstractmethod
    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        """Action records matching *query*, ordered by creation time then id."""

    def count_actions(self) -> dict[ActionStatus, int]:
        """How many actions the store holds per status (statuses with none left out).
        The default reads every action; the bundled stores count through their status
        index without reading a record."""
        counts: dict[ActionStatus, int] = {}
        for record in self.find_actions(ActionQuery()):
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def dead_letters(self) -> list[DeadLetter]:
        """Messages moved out of the queue because they did not decode, oldest first
        (then by id).  The default, for stores that keep messages as objects and so
        never meet one, is empty."""
        return []

    def drop_dead_letters(self, ids: Iterable[str]) -> int:
        """Forget the dead letters *ids* (unknown ids are ignored); how many were there."""
        del ids
        return 0

    def wait_for_work(self, timeout: float) -> None:
        """Block until messages may have become deliverable, for at most *timeout*
        seconds: what a worker does when :meth:`lease` found nothing.

        Returning early is always allowed (the caller simply leases again); a store that
        hears of commits (PostgreSQL ``LISTEN``/``NOTIFY``) returns as soon as one
        enqueues or releases messages.  The default waits *timeout* real seconds (not on
        :attr:`clock`: a fake clock would race ahead while a worker idles)."""
        time.sleep(timeout)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release connections; the store is unusable afterwards."""
