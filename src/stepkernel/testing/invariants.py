"""Invariant checkers: what must hold after every committed transition and at quiescence.

:class:`Invariants` is fed every commit a store applies (the records before, the commit,
the store's clock) and checks the commit *incrementally*: only the records it writes and
the ones they point at, so checking after every transition stays cheap.
:class:`CheckedStore` wraps any :class:`~stepkernel.ports.store.WorkflowStore` and feeds
it.  :meth:`Invariants.at_quiescence` checks the whole state at once (nothing may be
stranded; after healing, everything is finished).

Each check appends a :class:`Violation` naming the invariant and the action, step and
lane involved.  The checkers read records only through the inner store (a backdoor the
system under test does not use) and never change anything.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from attrs import frozen

from stepkernel.domain.lifecycle import ACTION_TABLE, STEP_TABLE
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    AchievementRecord,
    ActionRecord,
    LaneRecord,
    Record,
    RecordKey,
    StepRecord,
    key_of,
)
from stepkernel.domain.status import ActionStatus, StepStatus
from stepkernel.ports.store import Commit, WorkflowStore
from stepkernel.testing.proxy import StoreProxy
from stepkernel.testing.wakeups import WakeupScan

INVARIANTS: tuple[str, ...] = (
    "lifecycle",
    "dependencies",
    "settle-in-same-commit",
    "one-performing-per-lane",
    "lane-holder-alive",
    "superseded-never-ran",
    "achievement-only-for-success",
    "reuse-only-in-flight",
    "event-applied-once",
    "completion-while-waiting",
    "timer-not-early",
    "no-stranded-action",
    "liveness",
    "body-runs",
    "worker-error",
)
"""Every invariant name a :class:`Violation` may carry (the simulator adds the last two;
the ledger reports separately, see :mod:`stepkernel.testing.simulation.ledger`)."""


def _reachable(edges: Iterable[tuple[Any, Any]]) -> frozenset[tuple[Any, Any]]:
    """Every (from, to) joined by a path of edges: one commit may take several (a step
    whose body fans out nothing goes pending -> performing -> succeeded at once)."""
    closure = set(edges)
    while True:
        more = {(a, d) for a, b in closure for c, d in closure if b == c} - closure
        if not more:
            return frozenset(closure)
        closure |= more


_ACTION_EDGES = _reachable((src, dst) for (src, _t), dst in ACTION_TABLE.items())
_STEP_EDGES = _reachable((src, dst) for (src, _t), dst in STEP_TABLE.items())
_IN_FLIGHT = (ActionStatus.PENDING, ActionStatus.PERFORMING)


@frozen
class Violation:
    """One broken invariant: its name, what happened, and where."""

    invariant: str
    message: str
    action_id: str | None = None
    step: int | None = None
    lane: str | None = None

    def __str__(self) -> str:
        where = []
        if self.action_id is not None:
            where.append(f"action {self.action_id}")
        if self.step is not None:
            where.append(f"step {self.step}")
        if self.lane is not None:
            where.append(f"lane {self.lane!r}")
        place = f" ({', '.join(where)})" if where else ""
        return f"[{self.invariant}]{place}: {self.message}"


class InvariantViolation(AssertionError):
    """Raised by :meth:`Invariants.raise_if_any` with every violation found."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = tuple(violations)
        lines = "\n".join(f"  {v}" for v in self.violations[:20])
        more = len(self.violations) - 20
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.violations)} invariant violation(s):\n{lines}{tail}")


Lookup = Callable[[RecordKey], Record | None]


def _run_id(event_id: str) -> str:
    """``body:X:s:a``/``raised:X:s:a`` -> its run message ``run:X:s:a``; else ``""``."""
    kind, _, rest = event_id.partition(":")
    return f"run:{rest}" if kind in ("body", "raised") else ""


class Invariants:
    """Incremental invariant checks over the commits of one store.

    Call :meth:`check_commit` with the records a commit replaces (``before``, loaded
    from the store just before it applied), the commit, a lookup of the state after it,
    and the store's clock at that moment.  Violations accumulate in ``violations``.
    """

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.transitions = 0
        self._events: set[str] = set()
        self._group = False  # the commit being checked applies several events
        self._performing: dict[str, set[str]] = defaultdict(set)

    # -- reporting ---------------------------------------------------------------------------

    def fail(self, invariant: str, message: str, **where: str | int | None) -> None:
        self.violations.append(Violation(invariant, message, **where))  # type: ignore[arg-type]

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvariantViolation(self.violations)

    # -- per commit --------------------------------------------------------------------------

    def check_commit(
        self,
        before: Mapping[RecordKey, Record | None],
        commit: Commit,
        lookup: Lookup,
        now: float,
    ) -> None:
        """Check one applied commit (see the class docstring)."""
        if not commit.writes and not commit.deletes:
            return
        self.transitions += 1
        self._check_event(commit)
        for record in commit.writes:
            old = before.get(key_of(record))
            if isinstance(record, ActionRecord):
                assert old is None or isinstance(old, ActionRecord)
                self._check_action(old, record, lookup, now)
            elif isinstance(record, LaneRecord):
                self._check_lane(record, lookup)
            else:
                self._check_achievement(record, lookup)
        for lane, performing in self._performing.items():
            if len(performing) > 1:
                self.fail(
                    "one-performing-per-lane",
                    f"{len(performing)} actions performing: {sorted(performing)}",
                    lane=lane,
                )

    def _check_event(self, commit: Commit) -> None:
        events = {r.last_event for r in commit.writes}
        # A group commit (StepBodiesRan) applies several body outcomes and acks each one's
        # run message; its records name the member that changed each last (maybe not all).
        self._group = len(commit.ack) > 1 and all(_run_id(e) in commit.ack for e in events)
        if len(events) > 1 and not self._group:
            self.fail("event-applied-once", f"one commit writes several events: {sorted(events)}")
        for event in events:
            if event in self._events:
                self.fail("event-applied-once", f"event {event} committed a second time")
            self._events.add(event)

    def _check_action(
        self, old: ActionRecord | None, new: ActionRecord, lookup: Lookup, now: float
    ) -> None:
        aid = new.id
        performing = self._performing[new.concurrency_key]
        if new.status is ActionStatus.PERFORMING:
            performing.add(aid)
        else:
            performing.discard(aid)
        self._check_steps_shape(new)
        if old is not None:
            self._check_transition(old, new)
        if new.status.terminal and (old is None or not old.status.terminal):
            lane = lookup((LANE, new.concurrency_key))
            if isinstance(lane, LaneRecord) and lane.holder == aid:
                self.fail(
                    "lane-holder-alive",
                    f"{aid} finished ({new.status.value}) but still holds the lane",
                    action_id=aid,
                    lane=new.concurrency_key,
                )
        old_settled_out = old is not None and old.settled_for_parents
        if new.settled_for_parents and not old_settled_out:
            self._check_settled_out(new, lookup)
        if new.superseded_by is not None and (old is None or old.superseded_by is None):
            self._check_superseded(old, new, lookup)
        self._check_joins(old, new)
        if new.completion_id is not None and (old is None or old.completion_id is None):
            done = [s for s in new.steps if s.status is StepStatus.SUCCEEDED]
            if not new.outbound or len(done) != len(new.step_names):
                self.fail(
                    "completion-while-waiting",
                    "an outside completion applied before every step had succeeded",
                    action_id=aid,
                )
        newly_timed_out = new.status is ActionStatus.TIMED_OUT and (
            old is None or not old.status.terminal
        )
        if newly_timed_out and (new.deadline is None or new.deadline > now + 1e-9):
            self.fail(
                "timer-not-early",
                f"timed out at {now} before its deadline {new.deadline}",
                action_id=aid,
            )
        self._check_settlements(old, new, lookup, now)
        if new.callbacks == "failed":
            scope = lookup((ACHIEVEMENT, new.checksum_key)) if new.checksum else None
            if isinstance(scope, AchievementRecord) and scope.achieved and scope.action_id == aid:
                self.fail(
                    "achievement-only-for-success",
                    "achievement granted to an action whose callbacks failed",
                    action_id=aid,
                )

    def _check_steps_shape(self, new: ActionRecord) -> None:
        for step in new.steps:
            deps = set(step.dependencies)
            if not step.settled <= deps or not step.failures <= step.settled:
                self.fail(
                    "dependencies",
                    "settled or failed ids that are not dependencies",
                    action_id=new.id,
                    step=step.index,
                )

    def _check_transition(self, old: ActionRecord, new: ActionRecord) -> None:
        aid = new.id
        if old.status is not new.status:
            if old.status.terminal:
                self.fail(
                    "lifecycle",
                    f"terminal status {old.status.value} changed to {new.status.value}",
                    action_id=aid,
                )
            elif (old.status, new.status) not in _ACTION_EDGES:
                self.fail(
                    "lifecycle",
                    f"{old.status.value} -> {new.status.value}: no path in the lifecycle table",
                    action_id=aid,
                )
        if len(new.steps) < len(old.steps):
            self.fail("lifecycle", "steps were taken back", action_id=aid)
        for before, after in zip(old.steps, new.steps, strict=False):
            self._check_step_transition(aid, before, after)

    def _check_step_transition(self, aid: str, before: StepRecord, after: StepRecord) -> None:
        if before.status is not after.status:
            if before.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
                self.fail(
                    "lifecycle",
                    f"finished step changed {before.status.value} -> {after.status.value}",
                    action_id=aid,
                    step=after.index,
                )
            elif (before.status, after.status) not in _STEP_EDGES:
                self.fail(
                    "lifecycle",
                    f"step {before.status.value} -> {after.status.value}: no path in the table",
                    action_id=aid,
                    step=after.index,
                )
        if before.status is not StepStatus.PENDING and (
            before.dependencies != after.dependencies or before.attempt != after.attempt
        ):
            self.fail(
                "dependencies",
                "a step's outcome changed after it was applied (dependencies or attempt)",
                action_id=aid,
                step=after.index,
            )
        if not before.settled <= after.settled:
            self.fail("dependencies", "a settled dependency was unsettled", action_id=aid)

    def _check_settled_out(self, new: ActionRecord, lookup: Lookup) -> None:
        """A finished action's waiting steps settle it in the very same commit."""
        for dependent in new.dependents:
            parent = lookup((ACTION, dependent.action_id))
            if not isinstance(parent, ActionRecord) or parent.status is not (
                ActionStatus.PERFORMING
            ):
                continue
            step = parent.current_step
            if (
                step is None
                or step.index != dependent.step
                or step.status is not StepStatus.PERFORMING
                or dependent.dep_id not in step.dependencies
            ):
                continue
            if dependent.dep_id not in step.settled:
                self.fail(
                    "settle-in-same-commit",
                    f"{new.id} finished ({new.status.value}) but {dependent.dep_id} of its "
                    "waiting step is still open",
                    action_id=parent.id,
                    step=step.index,
                )

    def _check_superseded(
        self, old: ActionRecord | None, new: ActionRecord, lookup: Lookup
    ) -> None:
        if any(s.status is not StepStatus.PENDING for s in new.steps) or new.started_at:
            self.fail("superseded-never-ran", "a superseded action ran a step", action_id=new.id)
        successor = lookup((ACTION, str(new.superseded_by)))
        if not isinstance(successor, ActionRecord):
            self.fail(
                "superseded-never-ran",
                f"superseded by {new.superseded_by}, which does not exist",
                action_id=new.id,
            )
            return
        moved = set(old.dependents if old is not None else ()) - set(new.dependents)
        if successor.status in _IN_FLIGHT and not moved <= set(successor.dependents):
            self.fail(
                "superseded-never-ran",
                f"waiting parents {sorted(d.action_id for d in moved)} did not move to "
                f"successor {successor.id}",
                action_id=new.id,
            )

    def _check_joins(self, old: ActionRecord | None, new: ActionRecord) -> None:
        added = set(new.dependents) - set(old.dependents if old is not None else ())
        added.discard(new.parent) if new.parent is not None else None
        # In a group commit, a join may precede the end of the joined action: it was in
        # flight when joined if it was before the commit.
        joined = old if self._group and old is not None else new
        if added and (joined.status not in _IN_FLIGHT or joined.superseded_by is not None):
            self.fail(
                "reuse-only-in-flight",
                f"joined while {joined.status.value} by {sorted(d.action_id for d in added)}",
                action_id=new.id,
            )

    def _check_settlements(
        self, old: ActionRecord | None, new: ActionRecord, lookup: Lookup, now: float
    ) -> None:
        """Newly settled dependencies: a wait only at or after its deadline, a child only
        once it (or what superseded it) has finished."""
        before = {s.index: s for s in old.steps} if old is not None else {}
        for step in new.steps:
            prior = before.get(step.index)
            fresh = step.settled - (prior.settled if prior is not None else frozenset())
            if not fresh:
                continue
            waits = dict(step.wakes)
            links = dict(step.links)
            for dep in sorted(fresh - waits.keys()):
                target = lookup((ACTION, links.get(dep, dep)))
                seen = 0
                while (
                    isinstance(target, ActionRecord)
                    and target.superseded_by is not None
                    and seen < 100
                ):
                    target = lookup((ACTION, target.superseded_by))
                    seen += 1
                if isinstance(target, ActionRecord) and not target.settled_for_parents:
                    self.fail(
                        "settle-in-same-commit",
                        f"{dep} settled while {target.id} is still {target.status.value}",
                        action_id=new.id,
                        step=step.index,
                    )
            for dep, at in step.wakes:
                if dep in fresh and at > now + 1e-9:
                    self.fail(
                        "timer-not-early",
                        f"wait {dep} ended at {now}, before its deadline {at}",
                        action_id=new.id,
                        step=step.index,
                    )

    def _check_lane(self, lane: LaneRecord, lookup: Lookup) -> None:
        if lane.holder is None:
            return
        holder = lookup((ACTION, lane.holder))
        if not isinstance(holder, ActionRecord) or holder.status.terminal:
            status = holder.status.value if isinstance(holder, ActionRecord) else "missing"
            self.fail(
                "lane-holder-alive", f"held by {lane.holder}, which is {status}", lane=lane.key
            )

    def _check_achievement(self, record: Record, lookup: Lookup) -> None:
        assert isinstance(record, AchievementRecord)
        if record.achieved is None:
            return
        action = lookup((ACTION, record.action_id))
        if (
            not isinstance(action, ActionRecord)
            or action.status is not ActionStatus.SUCCEEDED
            or action.callbacks == "failed"
            or action.checksum != record.checksum
        ):
            self.fail(
                "achievement-only-for-success",
                f"scope {record.key!r} achieved by {record.action_id}, which did not succeed "
                "with all its callbacks",
                action_id=record.action_id,
            )

    # -- whole state -------------------------------------------------------------------------

    def at_quiescence(
        self,
        records: Mapping[RecordKey, Record],
        messages: Iterable[Message],
        *,
        healed: bool,
    ) -> None:
        """Check the whole state: nothing in flight lacks a wake-up (a queued or leased
        message, an open dependency that has one, an outbound wait, or a place in a
        lane); once *healed* and drained, every action is finished and nothing is queued.
        """
        queued = list(messages)
        actions = {r.id: r for r in records.values() if isinstance(r, ActionRecord)}
        if healed:
            for record in actions.values():
                if not record.status.terminal or record.callbacks == "pending":
                    self.fail(
                        "liveness",
                        f"still {record.status.value} (callbacks {record.callbacks}) after "
                        "healing and draining",
                        action_id=record.id,
                    )
            if queued:
                self.fail("liveness", f"{len(queued)} message(s) left: {queued[0].id} ...")
            return
        scan = WakeupScan(records, queued)
        for action in scan.actions.values():
            if not scan.has_wakeup(action):
                self.fail(
                    "no-stranded-action",
                    f"{action.status.value} with no message, timer, lease, outbound wait or "
                    "lane place that will move it",
                    action_id=action.id,
                )


class CheckedStore(StoreProxy):
    """Wraps *inner* and checks every commit it applies with *invariants*.

    The records a commit replaces are read from *inner* just before it applies, the
    state after it is read back from *inner*, and *now* is the inner store's clock: the
    reference clock for timers.  Everything else is delegated unchanged.
    """

    def __init__(self, inner: WorkflowStore, invariants: Invariants | None = None) -> None:
        super().__init__(inner)
        self.invariants = invariants if invariants is not None else Invariants()

    def commit(self, commit: Commit) -> None:
        keys = [key_of(r) for r in commit.writes] + [t.key for t in commit.deletes]
        before = self.inner.load(keys) if keys else {}
        self.inner.commit(commit)
        cache: dict[RecordKey, Record | None] = {key_of(r): r for r in commit.writes}
        cache.update((t.key, None) for t in commit.deletes)

        def lookup(key: RecordKey) -> Record | None:
            if key not in cache:
                cache[key] = self.inner.load([key])[key]
            return cache[key]

        self.invariants.check_commit(before, commit, lookup, self.inner.now())


__all__ = [
    "INVARIANTS",
    "CheckedStore",
    "InvariantViolation",
    "Invariants",
    "Violation",
]
