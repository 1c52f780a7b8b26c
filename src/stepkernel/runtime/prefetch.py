"""What a worker thread knows of the records its leased batch touches.

A worker thread leases a batch of messages and handles them one by one; each needs its
action's record (and, for a last step, its lane and waiting parents) before it can run
and decide.  Loaded one message at a time, that is one store round trip per step.
:class:`BatchRecords` reads the records of the whole batch in one load when the batch is
leased, then keeps them current with what the thread's own commits write -- the twenty
children of one fan-out, leased together, share their parent's record instead of
reading it twenty times.

Correctness never rests on these records being current: every commit checks the
versions it read, and a record another process changed meanwhile costs a conflict and a
fresh load (:meth:`stepkernel.runtime.engine.Engine.apply`, which hands what it reloads
back here), exactly as when it changes between a load and a commit.  What staleness could cost is a step body run for a
step that was cancelled in the meantime (its commit then refuses it), so a record is
only served while it is younger than ``max_age`` seconds; older ones are loaded again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping

from stepkernel.domain.messages import Message, MessageKind
from stepkernel.domain.records import ACTION, Record, RecordKey, key_of
from stepkernel.domain.view import Decision
from stepkernel.ports.store import WorkflowStore

__all__ = ["MAX_AGE", "BatchRecords", "message_keys"]

log = logging.getLogger("stepkernel.worker")

MAX_AGE = 0.5
"""Seconds a record read or written during a batch is served without loading it again."""


def message_keys(message: Message) -> list[RecordKey]:
    """The records handling *message* surely reads: its action (all the kernel asks
    first for a delivered message, see :func:`stepkernel.domain.kernel.keys_for`), and
    for a run message the keys it asks to preload (a last step's lane and parents)."""
    keys = [(ACTION, message.action_id)]
    if message.kind is MessageKind.RUN:
        keys.extend(message.preload)
    return keys


class BatchRecords:
    """Records known to one worker thread during one batch (see module).  Not shared
    between threads."""

    def __init__(
        self,
        store: WorkflowStore,
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_age = max_age
        self.clock = clock
        self._known: dict[RecordKey, tuple[Record | None, float]] = {}
        self.loads_saved = 0

    def prefetch(self, messages: Iterable[Message]) -> None:
        """Read every record *messages* will need, in one load (after-callback messages
        excepted: their handler reads its action afresh before running user code).

        Never raises: when the load fails -- the store unavailable, or one stored record
        that does not decode (:class:`CorruptRecordError`) -- nothing is known and each
        message loads its own records, so the one concerned is quarantined by the engine
        and the rest of the batch runs."""
        keys = list(
            dict.fromkeys(
                k for m in messages if m.kind is not MessageKind.AFTER for k in message_keys(m)
            )
        )
        if not keys:
            return
        try:
            self.remember(self.store.load(keys))
        except Exception as exc:
            log.debug("prefetch failed (%s: %s); loading per message", type(exc).__name__, exc)
            self._known.clear()

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        """The records at *keys*: those known and younger than ``max_age`` as known, the
        rest from one store load (then known too)."""
        now = self.clock()
        found: dict[RecordKey, Record | None] = {}
        missing: list[RecordKey] = []
        for key in keys:
            hit = self._known.get(key)
            if hit is not None and now - hit[1] <= self.max_age:
                found[key] = hit[0]
            else:
                missing.append(key)
        if missing:
            loaded = self.store.load(missing)
            self.remember(loaded)
            found.update(loaded)
        else:
            self.loads_saved += 1
        return found

    def committed(self, decision: Decision) -> None:
        """What this thread's commit wrote is now the latest version of those records."""
        now = self.clock()
        for record in decision.writes:
            self._known[key_of(record)] = (record, now)
        for tomb in decision.deletes:
            self._known[tomb.key] = (None, now)

    def forget(self, keys: Iterable[RecordKey] | None = None) -> None:
        """Drop what is known of *keys* (``None``: of everything), e.g. a record that
        did not decode, or everything after an unexpected error."""
        if keys is None:
            self._known.clear()
            return
        for key in keys:
            self._known.pop(key, None)

    def remember(self, loaded: Mapping[RecordKey, Record | None]) -> None:
        """*loaded* was just read from the store: the latest known versions."""
        now = self.clock()
        for key, record in loaded.items():
            self._known[key] = (record, now)
