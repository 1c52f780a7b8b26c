"""Submission into lanes: achievements, deadlocks, checksum joins, superseding, starting.

Rules (in this order) for a new action on lane ``L`` with checksum ``c`` under key ``K``:

1. ``(K, c)`` is already achieved: succeed at once, create nothing.
2. ``L`` is held by one of its ancestors: create it ``deadlocked`` (fails the parent step).
3. The holder of ``L`` or an action queued on it has the same ``(K, c)``: join it (the
   parent step waits on that action instead) -- unless that action already waits,
   transitively, on the parent or on anything waiting on the parent: then the child is
   ``deadlocked`` instead.
4. ``L`` is free: create it and start it.
5. Otherwise, if queueing behind the holder of ``L`` would close a cycle in the wait-for
   graph (the holder transitively waits on the parent or on anything waiting on it):
   create it ``deadlocked``.
6. Otherwise queue it; every older pending action on ``L`` is ``superseded`` by it and
   hands over its waiting parents.

The wait-for graph is read from the actions themselves, never stored: a pending action
waits on its lane's holder; a performing action waits on the open dependencies of its
current step (the children it created, or the actions its links point to); a waited-on
action that was superseded stands for the action that superseded it.  Cycles can
only be closed when a new wait is added, which is exactly rules 3 and 5, so checking
there finds every deadlock, across lanes, joins and superseding.
"""

from __future__ import annotations

import attrs

from stepkernel.domain.events import ActionSpec
from stepkernel.domain.ids import is_descendant, is_wait
from stepkernel.domain.lifecycle import next_action_status
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    AchievementRecord,
    ActionRecord,
    Dependent,
    LaneRecord,
    QueueEntry,
    StepRecord,
    evolve,
)
from stepkernel.domain.status import ActionStatus, ActionTrigger, StepStatus
from stepkernel.domain.transaction import Tx


@attrs.frozen(
    slots=False
)  # dict-backed: attrs then builds it by writing the instance dict, faster than slots
class Submitted:
    """How a submission was served: ``action_id`` is the action the dependency waits on
    (``None`` when nothing will ever settle it later); ``settled`` is ``(ok, status)``
    when the dependency is settled already."""

    outcome: str
    action_id: str | None
    settled: tuple[bool, ActionStatus] | None = None


def submit(
    tx: Tx,
    spec: ActionSpec,
    *,
    parent: Dependent | None,
    root_id: str,
    ancestor_lanes: frozenset[str],
) -> Submitted:
    """Apply the rules in the module docstring for *spec*."""
    needed = [(LANE, spec.concurrency_key)]
    if spec.checksum is not None:
        needed.append((ACHIEVEMENT, spec.checksum_key))
    tx.need(needed)

    if spec.checksum is not None:
        scope = tx.achievement(spec.checksum_key)
        if scope is not None and scope.achieved == spec.checksum:
            return Submitted("achieved", None, (True, ActionStatus.SUCCEEDED))

    if spec.concurrency_key in ancestor_lanes:
        return _deadlocked(tx, spec, parent=parent, root_id=root_id, ancestor_lanes=ancestor_lanes)

    stored = tx.get((LANE, spec.concurrency_key))
    if stored is None or (isinstance(stored, LaneRecord) and stored.empty):
        # Free lane: the new action is created already started (one record, not two).
        now = tx.now
        started = _pending_record(
            tx,
            spec,
            parent=parent,
            root_id=root_id,
            ancestor_lanes=ancestor_lanes,
            status=_STARTED,
            started_at=now,
            deadline=None if spec.timeout is None else now + spec.timeout,
            steps=(StepRecord(index=0, name=spec.step_names[0], started_at=now),),
        )
        tx.put(
            LaneRecord(
                key=spec.concurrency_key,
                holder=started.id,
                holder_checksum=None
                if spec.checksum is None
                else (spec.checksum_key, spec.checksum),
            )
        )
        _started(tx, started)
        return Submitted("created", started.id)
    assert isinstance(stored, LaneRecord)
    lane = stored
    if spec.checksum is not None:
        joined = _joinable(lane, spec)
        if joined is not None and not is_descendant(spec.id, joined):
            tx.need([(ACTION, joined)])
            target = tx.action(joined)
            if target is not None and not target.status.terminal:
                if parent is not None and _waits_on(tx, joined, _waiters(tx, parent.action_id)):
                    return _deadlocked(
                        tx, spec, parent=parent, root_id=root_id, ancestor_lanes=ancestor_lanes
                    )
                if parent is not None and parent not in target.dependents:
                    tx.put(evolve(target, dependents=(*target.dependents, parent)))
                return Submitted("joined", joined)

    record = _pending_record(
        tx, spec, parent=parent, root_id=root_id, ancestor_lanes=ancestor_lanes
    )

    ahead = lane.holder or lane.queue[0].action_id
    if parent is not None and _waits_on(tx, ahead, _waiters(tx, parent.action_id)):
        return _deadlocked(tx, spec, parent=parent, root_id=root_id, ancestor_lanes=ancestor_lanes)

    dependents = list(record.dependents)
    for entry in lane.queue:
        older = tx.action(entry.action_id)
        if older is None or older.status is not ActionStatus.PENDING:
            continue
        for dependent in older.dependents:
            if dependent not in dependents:
                dependents.append(dependent)
        tx.put(
            evolve(
                older,
                status=next_action_status(
                    older.status, ActionTrigger.SUPERSEDE, action_id=older.id
                ),
                superseded_by=record.id,
                dependents=(),
                finished_at=tx.now,
            )
        )
        tx.mark_finished(older.id)
    record = evolve(record, dependents=tuple(dependents))
    tx.put(record)
    entry = QueueEntry(
        action_id=record.id, checksum_key=record.checksum_key, checksum=record.checksum
    )
    tx.put_lane(evolve(lane, queue=(entry,)))
    return Submitted("queued", record.id)


_STARTED = next_action_status(ActionStatus.PENDING, ActionTrigger.START)
"""The status a submission on a free lane is created with (from the lifecycle table)."""


def start(tx: Tx, record: ActionRecord) -> ActionRecord:
    """Move a pending *record* (already the holder of its lane) to performing: arm its
    timeout, erase its scope's achievement, create its first step and ask to run it."""
    started = evolve(
        record,
        **_start_changes(tx, record.status, record.id, record.timeout, record.step_names),
    )
    _started(tx, started)
    return started


def _start_changes(
    tx: Tx,
    status: ActionStatus,
    action_id: str,
    timeout: float | None,
    step_names: tuple[str, ...],
) -> dict[str, object]:
    """The fields that starting an action sets."""
    return {
        "status": next_action_status(status, ActionTrigger.START, action_id=action_id),
        "started_at": tx.now,
        "deadline": None if timeout is None else tx.now + timeout,
        "steps": (StepRecord(index=0, name=step_names[0], started_at=tx.now),),
    }


def _started(tx: Tx, started: ActionRecord) -> None:
    """What goes with a start: the record, its timer, its scope's achievement erased, and
    the message that runs its first step."""
    tx.put(started)
    if started.deadline is not None:
        tx.send(Message.timeout(started.id, started.deadline))
    if started.checksum is not None:
        # Starting erases the scope's achievement and claims it: only this action's
        # success may grant it again (see AchievementRecord).
        tx.need([(ACHIEVEMENT, started.checksum_key)])
        tx.achievement(started.checksum_key)
        tx.put(
            AchievementRecord(
                key=started.checksum_key, checksum="", action_id="", claimed_by=started.id
            )
        )
    tx.send(Message.run(started.id, 0, 0, tx.now, preload=run_preload(started, 0)))


def run_preload(record: ActionRecord, index: int) -> tuple[tuple[str, str], ...]:
    """What running step *index* will probably touch besides the action: when it is the
    last step, the action may finish, so its lane, scope and waiting parents."""
    if index != len(record.step_names) - 1:
        return ()
    keys: list[tuple[str, str]] = [(LANE, record.concurrency_key)]
    if record.checksum is not None:
        keys.append((ACHIEVEMENT, record.checksum_key))
    keys.extend((ACTION, d.action_id) for d in record.dependents)
    return tuple(keys)


def leave_lane(tx: Tx, record: ActionRecord) -> None:
    """Take a finishing *record* off its lane; start the next queued action (FIFO)."""
    lane = tx.lane(record.concurrency_key)
    if lane.holder == record.id:
        if lane.queue:
            head, rest = lane.queue[0], lane.queue[1:]
            successor = tx.action(head.action_id)
            lane = evolve(lane, holder=None, holder_checksum=None, queue=rest)
            if successor is not None and successor.status is ActionStatus.PENDING:
                lane = evolve(lane, holder=successor.id, holder_checksum=_checksum_pair(successor))
                tx.put_lane(lane)
                if _achieved(tx, successor):
                    _succeed_unrun(tx, successor)
                else:
                    start(tx, successor)
                return
        else:
            tx.delete((LANE, lane.key))  # nobody left: an empty lane is not kept
            return
    else:
        lane = evolve(lane, queue=tuple(q for q in lane.queue if q.action_id != record.id))
    tx.put_lane(lane)


def _deadlocked(
    tx: Tx,
    spec: ActionSpec,
    *,
    parent: Dependent | None,
    root_id: str,
    ancestor_lanes: frozenset[str],
) -> Submitted:
    record = _pending_record(
        tx, spec, parent=parent, root_id=root_id, ancestor_lanes=ancestor_lanes
    )
    tx.put(
        evolve(
            record,
            status=next_action_status(record.status, ActionTrigger.DEADLOCK, action_id=record.id),
            dependents=(),  # its parent step is settled at once, as deadlocked
            finished_at=tx.now,
        )
    )
    tx.mark_finished(record.id)
    return Submitted("deadlocked", record.id, (False, ActionStatus.DEADLOCKED))


def _pending_record(
    tx: Tx,
    spec: ActionSpec,
    *,
    parent: Dependent | None,
    root_id: str,
    ancestor_lanes: frozenset[str],
    **changes: object,
) -> ActionRecord:
    """The new record of a submitted *spec*: pending, unless *changes* say otherwise."""
    return ActionRecord(
        id=spec.id,
        root_id=root_id,
        parent=parent,
        name=spec.name,
        actor_type=spec.actor_type,
        actor_key=spec.actor_key,
        arguments=spec.arguments,
        step_names=spec.step_names,
        concurrency_key=spec.concurrency_key,
        checksum_key=spec.checksum_key,
        checksum=spec.checksum,
        outbound=spec.outbound,
        timeout=spec.timeout,
        after=spec.after,
        ancestor_lanes=ancestor_lanes,
        dependents=() if parent is None else (parent,),
        created_at=tx.now,
        **changes,  # type: ignore[arg-type]
    )


def _achieved(tx: Tx, record: ActionRecord) -> bool:
    if record.checksum is None:
        return False
    tx.need([(ACHIEVEMENT, record.checksum_key)])
    scope = tx.achievement(record.checksum_key)
    return scope is not None and scope.achieved == record.checksum


def _succeed_unrun(tx: Tx, record: ActionRecord) -> None:
    """Achieved elsewhere while it queued: start it and succeed at once, running nothing."""
    from stepkernel.domain.progress import finish  # progress builds on this module

    started = evolve(
        record,
        status=next_action_status(record.status, ActionTrigger.START, action_id=record.id),
        started_at=tx.now,
    )
    finish(tx, started, ActionStatus.SUCCEEDED)


def _checksum_pair(record: ActionRecord) -> tuple[str, str] | None:
    return None if record.checksum is None else (record.checksum_key, record.checksum)


def _joinable(lane: LaneRecord, spec: ActionSpec) -> str | None:
    wanted = (spec.checksum_key, spec.checksum)
    for entry in reversed(lane.queue):
        if (entry.checksum_key, entry.checksum) == wanted:
            return entry.action_id
    if lane.holder is not None and lane.holder_checksum == wanted:
        return lane.holder
    return None


def _waiters(tx: Tx, action_id: str) -> frozenset[str]:
    """*action_id* and every action that (transitively) waits on it."""
    found: set[str] = set()
    frontier = [action_id]
    while frontier:
        tx.need([(ACTION, a) for a in frontier])
        following: list[str] = []
        for current in frontier:
            if current in found:
                continue
            found.add(current)
            record = tx.action(current)
            if record is not None:
                following.extend(d.action_id for d in record.dependents)
        frontier = [a for a in following if a not in found]
    return frozenset(found)


def _waits_on(tx: Tx, start: str, targets: frozenset[str]) -> bool:
    """Does *start* (transitively) wait on any of *targets*?  Walks the wait-for graph
    breadth first, asking for each level's records at once."""
    seen: set[str] = set()
    frontier = [start]
    while frontier:
        if any(a in targets for a in frontier):
            return True
        tx.need([(ACTION, a) for a in frontier])
        pending: list[ActionRecord] = []
        following: list[str] = []
        for current in frontier:
            if current in seen:
                continue
            seen.add(current)
            record = tx.action(current)
            if record is None:
                continue
            if record.status is ActionStatus.SUPERSEDED and record.superseded_by:
                # Its waiting parents now wait on the action that superseded it.
                following.append(record.superseded_by)
                continue
            if record.status.terminal:
                continue
            if record.status is ActionStatus.PENDING:
                pending.append(record)
                continue
            step = record.current_step
            if step is None or step.status is not StepStatus.PERFORMING:
                continue
            links = dict(step.links)
            following.extend(links.get(dep, dep) for dep in sorted(step.open) if not is_wait(dep))
        if pending:
            tx.need([(LANE, r.concurrency_key) for r in pending])
            for record in pending:
                holder = tx.lane(record.concurrency_key).holder
                if holder is not None and holder != record.id:
                    following.append(holder)
        frontier = [a for a in following if a not in seen]
    return False
