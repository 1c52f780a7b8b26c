"""Differential testing of a store against the in-memory reference.

:class:`DifferentialMachine` is a Hypothesis ``RuleBasedStateMachine`` that applies the
same random operations -- commits of writes, deletes and guards (some with stale
versions, so they must conflict), enqueues and acks, leases (all due messages, or only
given ids), releases, extensions, clock moves -- to the in-memory store and to the store
under test, and requires identical answers: the same records (byte for byte in their
encoded form), the same conflicts, the same leases, the same queue, the same
``next_due`` and the same ``find_actions`` results.  Subclass it and implement
:meth:`DifferentialMachine.make_store` (like the contract suite, third-party adapters
can run it)::

    class MyDifferential(DifferentialMachine):
        def make_store(self, clock: Clock) -> WorkflowStore:
            return MyStore(url, clock=clock)

    TestMyDifferential = MyDifferential.TestCase

Needs hypothesis (the ``dev`` extra).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.encoding import encode_record, seal
from stepkernel.domain.errors import ConflictError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACTION,
    LANE,
    ActionRecord,
    LaneRecord,
    Record,
    RecordKey,
    Tombstone,
)
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import ActionQuery, Commit, Delivery, WorkflowStore
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.contract_support import action as action_record

LANES = ("L0", "L1", "L2")
ACTIONS = ("a0", "a1", "a2")
KEYS: tuple[RecordKey, ...] = (*((LANE, k) for k in LANES), *((ACTION, a) for a in ACTIONS))
MESSAGES = tuple((a, step) for a in ACTIONS for step in range(2))
WORKERS = ("w0", "w1")
STATUSES = (ActionStatus.PENDING, ActionStatus.PERFORMING, ActionStatus.SUCCEEDED)

_keys = st.sampled_from(KEYS)
_modes = st.sampled_from(("next", "next", "next", "stale"))
_ids = st.lists(st.sampled_from(MESSAGES), max_size=3, unique=True)


def _message_id(pair: tuple[str, int]) -> str:
    return f"run:{pair[0]}:{pair[1]}:0"


class DifferentialMachine(RuleBasedStateMachine):
    """The store under test must answer every operation exactly as the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.clock_ref = FakeClock()
        self.clock_sut = FakeClock()
        self.reference: WorkflowStore = InMemoryWorkflowStore(clock=self.clock_ref)
        self.store = self.make_store(self.clock_sut)
        self.events = 0

    # -- hooks -------------------------------------------------------------------------------

    def make_store(self, clock: Clock) -> WorkflowStore:
        """A fresh, empty store under test on *clock* (override)."""
        raise NotImplementedError

    def dispose(self, store: WorkflowStore) -> None:
        """Release the store under test after a run (override if needed)."""
        store.close()

    def teardown(self) -> None:
        self.dispose(self.store)

    # -- helpers -----------------------------------------------------------------------------

    def _both(self, call: Any) -> tuple[Any, Any]:
        """Run *call* on both stores; return what each returned or raised (as a type)."""
        results = []
        for store in (self.reference, self.store):
            try:
                results.append(("ok", call(store)))
            except ConflictError as exc:
                results.append(("conflict", exc.fields.get("key") is not None))
        assert results[0] == results[1], f"reference {results[0]!r} != store {results[1]!r}"
        return results[0], results[1]

    def _current(self, key: RecordKey) -> Record | None:
        return self.reference.load([key])[key]

    def _successor(self, key: RecordKey, version: int, holder: int) -> Record:
        self.events += 1
        event = f"e{self.events}"
        if key[0] == LANE:
            lane = LaneRecord(key=key[1], holder=None if holder == 0 else ACTIONS[holder - 1])
            return seal(lane, version=version, prev_digest="", event_id=event)
        base = action_record(key[1], status=STATUSES[holder % len(STATUSES)], created_at=holder)
        assert isinstance(base, ActionRecord)
        return seal(base, version=version, prev_digest="", event_id=event)

    # -- rules -------------------------------------------------------------------------------

    @rule(
        writes=st.lists(st.tuples(_keys, _modes, st.integers(0, 3)), max_size=3),
        deletes=st.lists(st.tuples(_keys, _modes), max_size=2),
        guards=st.lists(st.tuples(_keys, _modes), max_size=2),
        enqueue=st.lists(st.tuples(st.sampled_from(MESSAGES), st.integers(0, 20)), max_size=3),
        ack=_ids,
    )
    def commit(
        self,
        writes: list[tuple[RecordKey, str, int]],
        deletes: list[tuple[RecordKey, str]],
        guards: list[tuple[RecordKey, str]],
        enqueue: list[tuple[tuple[str, int], int]],
        ack: list[tuple[str, int]],
    ) -> None:
        used: set[RecordKey] = set()
        records = []
        for key, mode, holder in writes:
            if key in used:
                continue
            used.add(key)
            current = self._current(key)
            version = (current.version if current is not None else 0) + 1
            records.append(self._successor(key, version if mode == "next" else version + 1, holder))
        tombs = []
        for key, mode in deletes:
            current = self._current(key)
            if key in used or current is None:
                continue
            used.add(key)
            tombs.append(Tombstone(key=key, version=current.version + (mode == "stale")))
        checks: dict[RecordKey, int] = {}
        for key, mode in guards:
            if key in used:
                continue
            current = self._current(key)
            checks[key] = (current.version if current is not None else 0) + (mode == "stale")
        now = self.clock_ref.now()
        messages = tuple(
            Message.run(pair[0], pair[1], 0, now + delay) for pair, delay in dict(enqueue).items()
        )
        change = Commit(
            writes=tuple(records),
            deletes=tuple(tombs),
            guards=checks,
            enqueue=messages,
            ack=tuple(_message_id(p) for p in ack),
        )
        self._both(lambda store: store.commit(change))

    @rule(
        worker=st.sampled_from(WORKERS),
        seconds=st.sampled_from((5.0, 30.0)),
        only=st.none() | _ids,
    )
    def lease(self, worker: str, seconds: float, only: list[tuple[str, int]] | None) -> None:
        ids = None if only is None else [_message_id(p) for p in only]

        def call(store: WorkflowStore) -> list[tuple[str, int, float]]:
            batch = store.lease(worker=worker, limit=10, lease_seconds=seconds, ids=ids)
            return sorted(_delivery(d) for d in batch)

        self._both(call)

    @rule(ids=_ids)
    def ack(self, ids: list[tuple[str, int]]) -> None:
        self._both(lambda store: store.ack([_message_id(p) for p in ids]))

    @rule(ids=_ids, worker=st.sampled_from(WORKERS))
    def release(self, ids: list[tuple[str, int]], worker: str) -> None:
        self._both(lambda store: store.release([_message_id(p) for p in ids], worker=worker))

    @rule(ids=_ids, worker=st.sampled_from(WORKERS), seconds=st.sampled_from((5.0, 60.0)))
    def extend(self, ids: list[tuple[str, int]], worker: str, seconds: float) -> None:
        self._both(
            lambda store: store.extend(
                [_message_id(p) for p in ids], worker=worker, lease_seconds=seconds
            )
        )

    @rule(seconds=st.sampled_from((1, 4, 10, 31)))
    def advance(self, seconds: int) -> None:
        self.clock_ref.advance(seconds)
        self.clock_sut.advance(seconds)

    @invariant()
    def same_state(self) -> None:
        """Records (encoded), queue, next_due and find_actions all agree."""
        ref = self.reference.load(KEYS)
        sut = self.store.load(KEYS)
        for key in KEYS:
            a, b = ref[key], sut[key]
            assert (a is None) == (b is None), key
            if a is not None and b is not None:
                assert encode_record(a) == encode_record(b), key
        assert _queue(self.reference) == _queue(self.store)
        assert self.reference.next_due() == self.store.next_due()
        for statuses in (None, frozenset({ActionStatus.PERFORMING})):
            query = ActionQuery(statuses=statuses)
            assert [r.id for r in self.reference.find_actions(query)] == [
                r.id for r in self.store.find_actions(query)
            ]


def _delivery(delivery: Delivery) -> tuple[str, int, float]:
    return (delivery.message.id, delivery.deliveries, delivery.lease_until)


def _queue(store: WorkflowStore) -> list[tuple[str, float]]:
    return sorted((m.id, m.available_at) for m in store.queued())


__all__ = ["DifferentialMachine"]
