"""The in-memory store: the reference adapter.

Everything lives in dicts behind one lock, so each commit is atomic and isolated.  It
raises exactly the errors the other adapters raise and is what ``stepkernel.testing``
runs users' workflows on.  Records are immutable objects and are stored as they are.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Collection, Iterable, Sequence

from stepkernel.domain.errors import ConflictError, InvalidInputError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ACTION, ActionRecord, Record, RecordKey, key_of
from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.store import ActionQuery, Commit, Delivery, WorkflowStore


class _Entry:
    __slots__ = ("deliveries", "generation", "lease_until", "message", "owner")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.lease_until = 0.0
        self.owner: str | None = None
        self.deliveries = 0
        self.generation = 0

    @property
    def due(self) -> float:
        return self.lease_until if self.owner is not None else self.message.available_at


class _YieldingLock:
    """A mutex for short, CPU-only critical sections shared by threads of one process.

    A thread that finds it taken yields the interpreter (``sleep(0)``) and tries again,
    instead of sleeping on the lock: under the GIL the holder was merely preempted and
    finishes within its time slice, and no release has to wake a sleeper, which would
    force an interpreter switch on every hand-over (with two worker threads that halves
    throughput).
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        acquire = self._lock.acquire
        while not acquire(False):
            time.sleep(0)

    def __exit__(self, *_exc: object) -> None:
        self._lock.release()


SETTLE_DEPTH = 8
"""Most unsettled versions a stored record chains (see :meth:`InMemoryWorkflowStore.commit`)."""


class InMemoryWorkflowStore(WorkflowStore):
    """A :class:`WorkflowStore` in process memory (one lock; thread-safe).

    Commit round trips: one lock acquisition per transition; leases are one acquisition
    per batch.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else SystemClock()
        self._lock = _YieldingLock()
        self._records: dict[RecordKey, Record] = {}
        self._messages: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self.commits = 0

    # -- records -------------------------------------------------------------------------

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        records = self._records
        with self._lock:
            return {key: records.get(key) for key in keys}

    def commit(self, commit: Commit) -> None:
        records = self._records
        for record in commit.writes:
            # Digests are computed when read (see Chained): the values are those a SQL
            # store computes at commit, so records read back alike.  A chain of unsettled
            # versions is settled once it reaches SETTLE_DEPTH, so a stored record holds
            # on to at most that many versions it succeeds.
            if record.unsettled_depth >= SETTLE_DEPTH:
                _ = record.digest
        with self._lock:
            for key, version in commit.guards.items():
                _check(key, version, records.get(key))
            for tomb in commit.deletes:
                _check(tomb.key, tomb.version, records.get(tomb.key))
            for record in commit.writes:
                _check(key_of(record), record.version - 1, records.get(key_of(record)))
            for tomb in commit.deletes:
                records.pop(tomb.key, None)
            for record in commit.writes:
                records[key_of(record)] = record
            for message_id in commit.ack:
                self._messages.pop(message_id, None)
            for message in commit.enqueue:
                self._enqueue(message)
            self.commits += 1

    # -- queue ---------------------------------------------------------------------------

    def _enqueue(self, message: Message) -> None:
        if message.id in self._messages:
            return
        entry = _Entry(message)
        self._messages[message.id] = entry
        heapq.heappush(self._heap, (message.available_at, next(self._seq), message.id, 0))

    def _push(self, entry: _Entry) -> None:
        entry.generation += 1
        heapq.heappush(self._heap, (entry.due, next(self._seq), entry.message.id, entry.generation))

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        if lease_seconds <= 0:
            raise InvalidInputError(
                f"lease_seconds must be > 0, got {lease_seconds!r}", lease_seconds=lease_seconds
            )
        now = self.clock.now()
        out: list[Delivery] = []
        if limit <= 0:
            return out
        with self._lock:
            if ids is not None:
                for message_id in ids:
                    entry = self._messages.get(message_id)
                    if entry is None or len(out) >= limit or entry.message.available_at > now:
                        continue
                    if entry.owner is not None and entry.lease_until > now:
                        continue
                    out.append(self._grant(entry, worker, now + lease_seconds))
                return out
            heap = self._heap
            while heap and len(out) < limit:
                due, _seq, message_id, generation = heap[0]
                if due > now:
                    break
                heapq.heappop(heap)
                entry = self._messages.get(message_id)
                if entry is None or entry.generation != generation or entry.due > now:
                    continue
                out.append(self._grant(entry, worker, now + lease_seconds))
        return out

    def _grant(self, entry: _Entry, worker: str, until: float) -> Delivery:
        entry.owner = worker
        entry.lease_until = until
        entry.deliveries += 1
        self._push(entry)
        return Delivery(message=entry.message, deliveries=entry.deliveries, lease_until=until)

    def ack(self, ids: Iterable[str]) -> None:
        with self._lock:
            for message_id in ids:
                self._messages.pop(message_id, None)

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        with self._lock:
            for message_id in ids:
                entry = self._messages.get(message_id)
                if entry is not None and entry.owner == worker:
                    entry.owner = None
                    entry.lease_until = 0.0
                    self._push(entry)

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        until = self.clock.now() + lease_seconds
        with self._lock:
            for message_id in ids:
                entry = self._messages.get(message_id)
                if entry is not None and entry.owner == worker:
                    entry.lease_until = until
                    self._push(entry)

    def next_due(self) -> float | None:
        with self._lock:
            heap = self._heap
            while heap:
                due, _seq, message_id, generation = heap[0]
                entry = self._messages.get(message_id)
                if entry is not None and entry.generation == generation and entry.due == due:
                    return due
                heapq.heappop(heap)  # a stale entry: acked, re-leased or released since
            return None

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        with self._lock:
            return [
                e.message
                for e in self._messages.values()
                if action_id is None or e.message.action_id == action_id
            ]

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        with self._lock:
            found = [
                r
                for k, r in self._records.items()
                if k[0] == ACTION and isinstance(r, ActionRecord) and query.matches(r)
            ]
        found.sort(key=lambda r: (r.created_at, r.id))
        return found if query.limit is None else found[: max(query.limit, 0)]

    # -- backdoor for tests ----------------------------------------------------------------

    def all_records(self) -> dict[RecordKey, Record]:
        """A snapshot of every stored record (test helper)."""
        with self._lock:
            return dict(self._records)


def _check(key: RecordKey, expected: int, current: Record | None) -> None:
    actual = 0 if current is None else current.version
    if actual != expected:
        raise ConflictError(
            f"{key[0]}:{key[1]} is at version {actual}, expected {expected}",
            key=key,
            expected=expected,
            actual=actual,
        )
