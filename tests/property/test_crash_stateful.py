"""Crash simulation: random action trees run by workers that die at port boundaries.

A :class:`RuleBasedStateMachine` builds a registry from random workflow shapes (fan-out
with ``do``/``on``, waits, lanes shared through ``concurrency_key``, checksums, outbound
actions, failing bodies, timeouts, after callbacks) and runs it on a
:class:`FaultyStore` over the in-memory store.  Rules submit roots, run worker steps,
crash workers at chosen points, duplicate deliveries, let leases expire, move the clock
and complete actions from outside (outbound ones early, late or twice; unknown and
finished ones, which must be refused with a typed error and change nothing).  Invariants
are checked after every rule; the teardown heals the store, drains everything and
requires every tree to finish.

Run sizes (issue 3): the default (CI) profile runs at least 300 examples of 60 rule
steps on the in-memory store and 100 of 40 on SQLite; a larger profile (``soak``)
scales both up.  Shrunk failures are replayed verbatim as named tests at the bottom.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import sqlalchemy
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from stepkernel import (
    ActionFinishedError,
    ActionNotFoundError,
    ActionStatus,
    App,
    CompletionError,
    Registry,
    RetryPolicy,
)
from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.adapters.sql.schema import records as sql_records
from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine
from stepkernel.domain.encoding import decode_record, seal, verify_digest
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACTION,
    LANE,
    AchievementRecord,
    ActionRecord,
    LaneRecord,
    Record,
    RecordKey,
    StepRecord,
)
from stepkernel.domain.status import StepStatus
from stepkernel.ports.store import Commit, WorkflowStore
from stepkernel.testing import FakeClock, drain
from stepkernel.testing.faults import (
    CRASH_POINTS,
    DUPLICATE_DELIVERY,
    FaultyStore,
    SimulatedCrash,
)
from stepkernel.testing.strategies import ActionShape, ChildShape, StepShape, workflow_shapes

ACTORS = 3
BodyKey = tuple[str, int, int]


@attrs.frozen
class Node:
    id: int


def _body(shape: StepShape, runs: Counter[BodyKey]) -> Callable[..., None]:
    def body(step: Any, node: Node) -> None:
        runs[(step.action_id, step.index, step.attempt)] += 1
        if shape.fail == "raise_always" or (shape.fail == "raise_once" and step.attempt == 0):
            raise RuntimeError(f"{shape.fail} on attempt {step.attempt}")
        if shape.fail == "mark_failed":
            step.fail("marked failed")
            return
        for child in shape.children:
            step.on(Node((node.id + child.offset) % ACTORS), f"a{child.kind}")
        for seconds in shape.waits:
            step.wait(seconds)

    return body


def _lane(name: str) -> Callable[..., str]:
    return lambda _node: name


def _node_checksum(node: Node) -> int:
    return node.id


def _after(_action: Any, _node: Node) -> None:
    return None


def build_registry(shapes: tuple[ActionShape, ...], runs: Counter[BodyKey]) -> Registry:
    """Actions ``a0``.. on ``Node`` following *shapes*; step bodies count their runs."""
    reg = Registry()
    reg.register_actor(Node, key=lambda n: n.id, load=lambda key: Node(int(key)))
    for shape in shapes:
        definition = reg.action(
            Node,
            f"a{shape.kind}",
            concurrency_key=None if shape.lane is None else _lane(shape.lane),
            checksum=_node_checksum if shape.checksum else None,
            outbound=shape.outbound,
            timeout=shape.timeout,
        )
        for index, step in enumerate(shape.steps):
            definition.step(name=f"s{index}")(_body(step, runs))
        if shape.after:
            definition.after("all")(_after)
    return reg


class CrashMachine(RuleBasedStateMachine):
    """Workers that crash, duplicate and lose leases must never break the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False

    @initialize(
        shapes=workflow_shapes(),
        seed=st.integers(0, 2**16),
        crash_rate=st.sampled_from([0.0, 0.02, 0.08]),
        duplicate_rate=st.sampled_from([0.0, 0.2]),
    )
    def setup(
        self,
        shapes: tuple[ActionShape, ...],
        seed: int,
        crash_rate: float,
        duplicate_rate: float,
    ) -> None:
        self.shapes = shapes
        self.runs: Counter[BodyKey] = Counter()
        self.clock = FakeClock()
        self.inner = self.make_store(self.clock)
        self.store = FaultyStore(
            self.inner,
            rng=random.Random(seed),
            crash_rate=crash_rate,
            duplicate_rate=duplicate_rate,
        )
        ids = itertools.count(1)
        self.app = App(
            build_registry(shapes, self.runs),
            self.store,
            retry=RetryPolicy(attempts=3, initial_delay=1, jitter=0),
            new_id=lambda: f"r{next(ids)}",
            rng=random.Random(seed),
        )
        self.workers = itertools.count(1)
        self.terminal: dict[str, ActionStatus] = {}
        self.seen: dict[RecordKey, ActionRecord] = {}
        self.ready = True

    # -- helpers -----------------------------------------------------------------------------

    def make_store(self, clock: FakeClock) -> WorkflowStore:
        """The store under test (the in-memory reference here)."""
        return InMemoryWorkflowStore(clock=clock)

    def records(self) -> dict[RecordKey, Record]:
        assert isinstance(self.inner, InMemoryWorkflowStore)
        return self.inner.all_records()

    def actions(self) -> list[ActionRecord]:
        return [r for r in self.records().values() if isinstance(r, ActionRecord)]

    def snapshot(self) -> tuple[dict[RecordKey, Record], list[Message]]:
        """Every stored record and every queued message (by id), read behind the port."""
        return self.records(), sorted(self.inner.queued(), key=lambda m: m.id)

    def complete_refused(
        self,
        action_id: str,
        status: str,
        completion_id: str,
        refusal: type[CompletionError] | None,
    ) -> None:
        """Complete *action_id* from outside: it must raise *refusal* (``None``: be a
        quiet no-op) and leave every record and queued message exactly as it was.  A
        simulated crash (the command never reached the kernel) also changes nothing."""
        before = self.snapshot()
        raised: type[BaseException] | None = None
        try:
            self.app.complete(action_id, status, completion_id=completion_id)
        except (CompletionError, SimulatedCrash) as error:
            raised = type(error)
        if raised is not SimulatedCrash:
            assert raised is refusal, (action_id, completion_id, raised)
        assert self.snapshot() == before, (action_id, completion_id)

    def crashes(self) -> int:
        return sum(n for point, n in self.store.hits.items() if point in CRASH_POINTS)

    def work(self, limit: int) -> None:
        """One worker leases up to *limit* messages and handles them; if it crashes it
        is gone, and its remaining leases are abandoned."""
        worker = f"w{next(self.workers)}"
        try:
            batch = self.store.lease(
                worker=worker, limit=limit, lease_seconds=self.app.lease_seconds
            )
            for delivery in batch:
                self.app.engine.handle(delivery)
        except SimulatedCrash:
            return

    # -- rules -------------------------------------------------------------------------------

    @rule(kind=st.integers(0, 3), actor=st.integers(0, ACTORS - 1))
    def submit_root(self, kind: int, actor: int) -> None:
        with contextlib.suppress(SimulatedCrash):
            self.app.invoke_later(Node(actor), f"a{kind % len(self.shapes)}")

    @rule(limit=st.integers(1, 3))
    def run_worker_step(self, limit: int) -> None:
        self.work(limit)

    @rule(workers=st.integers(2, 6))
    def run_worker_steps(self, workers: int) -> None:
        for _ in range(workers):
            self.work(3)

    @rule(point=st.sampled_from(CRASH_POINTS), limit=st.integers(1, 3))
    def crash_worker(self, point: str, limit: int) -> None:
        self.store.arm(point)
        self.work(limit)
        self.store.disarm()

    @rule()
    def duplicate_delivery(self) -> None:
        worker = f"w{next(self.workers)}"
        try:
            batch = self.store.lease(worker=worker, limit=1, lease_seconds=self.app.lease_seconds)
            for delivery in batch * 2:
                self.app.engine.handle(delivery)
        except SimulatedCrash:
            return

    @rule()
    def expire_leases(self) -> None:
        self.clock.advance(self.app.lease_seconds + 1)

    @rule(seconds=st.integers(1, 10))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(
        pick=st.integers(0, 50),
        status=st.sampled_from(["succeeded", "succeeded", "failed", "cancelled"]),
        twice=st.booleans(),
        early=st.booleans(),
    )
    def complete_outbound(self, pick: int, status: str, twice: bool, early: bool) -> None:
        candidates = sorted(
            (
                r.id
                for r in self.actions()
                if r.outbound and not r.status.terminal and (early or r.awaiting_completion)
            ),
        )
        if not candidates:
            return
        target = candidates[pick % len(candidates)]
        for _ in range(2 if twice else 1):
            with contextlib.suppress(CompletionError, SimulatedCrash):
                self.app.complete(target, status)

    @rule(
        pick=st.integers(0, 50),
        form=st.sampled_from(["r0", "child", "suffix"]),
        status=st.sampled_from(["succeeded", "failed", "cancelled"]),
    )
    def complete_unknown(self, pick: int, form: str, status: str) -> None:
        """An id no action has (``r0``, a child never fanned out, a near miss): refused
        with ActionNotFoundError, nothing changes."""
        known = sorted(r.id for r in self.actions())
        base = known[pick % len(known)] if known else "r1"
        unknown = {"r0": "r0", "child": f"{base}.9.0", "suffix": f"{base}x"}[form]
        assert unknown not in known, unknown
        self.complete_refused(unknown, status, f"{status}:", ActionNotFoundError)

    @rule(
        pick=st.integers(0, 50),
        status=st.sampled_from(["succeeded", "failed", "cancelled"]),
        resend=st.booleans(),
    )
    def complete_finished(self, pick: int, status: str, resend: bool) -> None:
        """A finished action (outbound or not): a new completion is refused with
        ActionFinishedError; resending the completion it kept is a no-op.  Either way
        nothing changes."""
        finished = sorted(r.id for r in self.actions() if r.status.terminal)
        if not finished:
            return
        target = self.records()[(ACTION, finished[pick % len(finished)])]
        assert isinstance(target, ActionRecord)
        kept = target.completion_id or (
            None if target.early_completion is None else target.early_completion.id
        )
        if resend and kept is not None:
            self.complete_refused(target.id, status, kept, None)
        else:
            self.complete_refused(target.id, status, f"late:{status}", ActionFinishedError)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def one_performing_action_per_lane(self) -> None:
        if not self.ready:
            return
        performing = Counter(
            r.concurrency_key for r in self.actions() if r.status is ActionStatus.PERFORMING
        )
        assert all(n == 1 for n in performing.values()), performing

    @invariant()
    def steps_settle_only_their_dependencies(self) -> None:
        if not self.ready:
            return
        for record in self.actions():
            for step in record.steps:
                assert step.settled <= set(step.dependencies), (record.id, step)
                assert step.failures <= step.settled, (record.id, step)

    @invariant()
    def terminal_statuses_never_change(self) -> None:
        if not self.ready:
            return
        for record in self.actions():
            before = self.terminal.get(record.id)
            if before is not None:
                assert record.status is before, (record.id, before, record.status)
            elif record.status.terminal:
                self.terminal[record.id] = record.status
        stored = {r.id for r in self.actions()}
        assert set(self.terminal) <= stored, "a finished action disappeared"

    @invariant()
    def achievements_point_to_successful_actions(self) -> None:
        if not self.ready:
            return
        records = self.records()
        for record in records.values():
            if not isinstance(record, AchievementRecord):
                continue
            if record.achieved is None:
                # Erased and claimed by a started action: that action must exist.
                assert record.claimed_by is not None, record
                assert isinstance(records.get((ACTION, record.claimed_by)), ActionRecord)
                continue
            action = records.get((ACTION, record.action_id))
            assert isinstance(action, ActionRecord), record
            assert action.status is ActionStatus.SUCCEEDED, (record, action.status)
            assert action.callbacks != "failed", (record, action.callbacks)
            assert action.checksum == record.checksum, (record, action.checksum)

    @invariant()
    def versions_only_grow_and_chain(self) -> None:
        if not self.ready:
            return
        for key, record in self.records().items():
            verify_digest(record)
            if not isinstance(record, ActionRecord):
                continue  # lanes and achievements are deleted and re-created
            before = self.seen.get(key)
            if before is not None:
                assert record.version >= before.version, (key, before.version, record.version)
                if record.version == before.version:
                    assert record == before, key
                elif record.version == before.version + 1:
                    assert record.prev_digest == before.digest, key
                self._check_steps(before, record)
            self.seen[key] = record

    def _check_steps(self, before: ActionRecord, after: ActionRecord) -> None:
        """A step leaves pending once: once its body outcome is applied its
        dependencies are fixed, and steps are never taken back."""
        assert len(after.steps) >= len(before.steps), after.id
        for old, new in zip(before.steps, after.steps, strict=False):
            if old.status is not StepStatus.PENDING:
                assert new.status is not StepStatus.PENDING, (after.id, old, new)
                assert new.dependencies == old.dependencies, (after.id, old, new)
                assert new.attempt == old.attempt, (after.id, old, new)
                assert old.settled <= new.settled, (after.id, old, new)
            if old.status.terminal:
                assert new == old, (after.id, old, new)

    @invariant()
    def step_bodies_ran_for_applied_outcomes(self) -> None:
        if not self.ready:
            return
        for record in self.actions():
            for step in record.steps:
                if step.status in (StepStatus.PERFORMING, StepStatus.SUCCEEDED) and _ran(step):
                    assert self.runs[(record.id, step.index, step.attempt)] >= 1, (record.id, step)
        extra = sum(n - 1 for n in self.runs.values() if n > 1)
        assert extra <= self.crashes(), (extra, self.crashes(), self.runs)

    def teardown(self) -> None:
        if not self.ready:
            return
        self.store.heal()
        drain(self.app, outbound=lambda _action: "succeeded", max_messages=20_000)
        for check in (
            self.one_performing_action_per_lane,
            self.steps_settle_only_their_dependencies,
            self.terminal_statuses_never_change,
            self.achievements_point_to_successful_actions,
            self.versions_only_grow_and_chain,
            self.step_bodies_ran_for_applied_outcomes,
        ):
            check()
        unfinished = [(r.id, r.status.value) for r in self.actions() if not r.status.terminal]
        assert not unfinished, unfinished
        roots = [r for r in self.actions() if r.parent is None]
        assert all(r.status.terminal for r in roots)
        assert self.inner.queued() == [], self.inner.queued()


def _ran(step: StepRecord) -> bool:
    """The step's body outcome was applied (it did not fail before its body ran)."""
    return step.status is not StepStatus.PENDING


def _runs(*, examples: int, steps: int) -> settings:
    """The loaded profile, set to run at least *examples* examples of *steps* rule steps.

    ``stateful_step_count`` is a maximum and counts the ``initialize`` rule, hence
    ``steps + 1``.  Generated runs go to the maximum (Hypothesis stops one early with
    probability 2**-16 per step), but its mutator ends about one run in fifteen after a
    handful of steps, so a tenth more examples are asked for.
    """
    return settings(
        settings(), max_examples=examples + examples // 10, stateful_step_count=steps + 1
    )


_profile = settings()

TestCrashMachine = CrashMachine.TestCase
TestCrashMachine.settings = _runs(
    examples=max(300, _profile.max_examples * 3 // 2),
    steps=max(60, _profile.stateful_step_count),
)


class SqliteCrashMachine(CrashMachine):
    """The same machine over the SQL store on SQLite: its commits, leases and
    redeliveries must keep every invariant under the same faults."""

    def make_store(self, clock: FakeClock) -> WorkflowStore:
        return SqlWorkflowStore(sqlite_engine(":memory:"), clock=clock)

    def records(self) -> dict[RecordKey, Record]:
        """Backdoor: every stored record, read from the table, not through the port."""
        assert isinstance(self.inner, SqlWorkflowStore)
        with self.inner.engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.select(sql_records.c.kind, sql_records.c.key, sql_records.c.data)
            ).all()
        return {(kind, key): decode_record((kind, key), data) for kind, key, data in rows}

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            if getattr(self, "ready", False):
                assert isinstance(self.inner, SqlWorkflowStore)
                self.inner.close()
                self.inner.engine.dispose()


TestSqliteCrashMachine = SqliteCrashMachine.TestCase
TestSqliteCrashMachine.settings = _runs(
    examples=max(100, _profile.max_examples // 4),
    steps=max(40, _profile.stateful_step_count // 2),
)


# -- the fault injector itself ----------------------------------------------------------------


def _faulty(crash_rate: float = 0.0, duplicate_rate: float = 0.0) -> FaultyStore:
    inner = InMemoryWorkflowStore(clock=FakeClock())
    return FaultyStore(
        inner, rng=random.Random(0), crash_rate=crash_rate, duplicate_rate=duplicate_rate
    )


def _lane_commit() -> Commit:
    return Commit(
        writes=(seal(LaneRecord(key="L", holder="a"), version=1, prev_digest="", event_id="e"),),
        enqueue=(Message.run("a", 0, 0, 0.0),),
    )


def test_simulated_crash_is_not_an_exception() -> None:
    """SimulatedCrash is a BaseException the engine's `except Exception` cannot swallow."""
    assert not issubclass(SimulatedCrash, Exception)
    assert issubclass(SimulatedCrash, BaseException)


def test_faulty_store_after_commit_applies_then_crashes() -> None:
    """FaultyStore.commit at after_commit applies the commit, then raises SimulatedCrash."""
    store = _faulty()
    store.arm("after_commit")
    with pytest.raises(SimulatedCrash) as raised:
        store.commit(_lane_commit())
    assert raised.value.point == "after_commit"
    assert store.inner.load([(LANE, "L")])[(LANE, "L")] is not None
    assert [m.id for m in store.inner.queued()] == ["run:a:0:0"]
    assert store.hits["after_commit"] == 1


def test_faulty_store_before_commit_changes_nothing() -> None:
    """FaultyStore.commit at before_commit raises before the inner store sees anything."""
    store = _faulty()
    store.arm("before_commit")
    with pytest.raises(SimulatedCrash):
        store.commit(_lane_commit())
    assert store.inner.load([(LANE, "L")])[(LANE, "L")] is None
    assert store.inner.queued() == []


def test_faulty_store_after_lease_keeps_the_lease() -> None:
    """FaultyStore.lease at after_lease leases in the inner store, then crashes: the
    message is not deliverable again until its lease expires."""
    store = _faulty()
    store.commit(_lane_commit())
    store.arm("after_lease")
    with pytest.raises(SimulatedCrash):
        store.lease(worker="w1", limit=5, lease_seconds=30)
    assert store.lease(worker="w2", limit=5, lease_seconds=30) == []
    clock = store.clock
    assert isinstance(clock, FakeClock)
    clock.advance(31)
    assert [d.message.id for d in store.lease(worker="w2", limit=5, lease_seconds=30)] == [
        "run:a:0:0"
    ]


def test_faulty_store_duplicate_rate_hands_a_delivery_twice() -> None:
    """FaultyStore.lease with duplicate_rate=1 returns every delivery twice in a row."""
    store = _faulty(duplicate_rate=1.0)
    store.commit(_lane_commit())
    batch = store.lease(worker="w", limit=5, lease_seconds=30)
    assert [d.message.id for d in batch] == ["run:a:0:0", "run:a:0:0"]
    assert batch[0] == batch[1]
    assert store.hits[DUPLICATE_DELIVERY] == 1


def test_faulty_store_heal_turns_faults_off() -> None:
    """FaultyStore.heal stops random crashes, duplicates and armed crash points."""
    store = _faulty(crash_rate=1.0, duplicate_rate=1.0)
    with pytest.raises(SimulatedCrash):
        store.load([(LANE, "L")])
    store.arm("before_commit")
    store.heal()
    store.commit(_lane_commit())
    assert len(store.lease(worker="w", limit=5, lease_seconds=30)) == 1
    assert store.load([(LANE, "L")])[(LANE, "L")] is not None


def _call_all(calls: list[Callable[[], object]]) -> None:
    for call in calls:
        call()


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_faulty_store_crash_points_count_hits(point: str) -> None:
    """Every crash point can be reached through a port call and is counted in hits."""
    store = _faulty()
    store.commit(_lane_commit())
    store.arm(point)
    calls: list[Callable[[], object]] = [
        lambda: store.load([(LANE, "L")]),
        lambda: store.commit(Commit(enqueue=(Message.run("b", 0, 0, 0.0),))),
        lambda: store.ack(["none"]),
        lambda: store.lease(worker="w", limit=1, lease_seconds=5),
    ]
    with pytest.raises(SimulatedCrash):
        _call_all(calls)
    assert store.hits[point] == 1
    assert sum(store.hits.values()) == 1


# -- bugs found by the machine (shrunk examples, replayed verbatim) ----------------------------


def _chain(kind: int, lane: str | None, child: int | None) -> ActionShape:
    """Action ``a<kind>`` with one step fanning out ``a<child>`` on the same actor."""
    children = () if child is None else (ChildShape(kind=child, offset=0),)
    return ActionShape(
        kind=kind,
        steps=(StepShape(children=children, waits=(), fail="none"),),
        lane=lane,
        checksum=False,
        outbound=False,
        timeout=None,
        after=False,
    )


def test_crash_machine_superseding_keeps_cross_lane_deadlock_detection() -> None:
    """Shrunk example: a0 (lane L0) -> a1 -> a2 -> a3 (lane L0).  Root a2 queues its a3
    child on L0 (held by root a0), then a new root a0 supersedes that child and inherits
    its waiting parent.  When a0's own a2 grandchild queues behind root a2, the lanes
    form a cycle; it must be detected (deadlocked) so that every tree still finishes."""
    shapes = (_chain(0, "L0", 1), _chain(1, None, 2), _chain(2, None, 3), _chain(3, "L0", None))
    state = CrashMachine()
    state.setup(shapes=shapes, seed=0, crash_rate=0.0, duplicate_rate=0.0)
    state.submit_root(actor=0, kind=0)
    state.submit_root(actor=0, kind=2)
    state.run_worker_step(limit=2)
    state.submit_root(actor=0, kind=0)
    state.teardown()
