"""Submission into lanes: achievements, deadlocks, checksum joins, superseding, starting.

Rules (in this order) for a new action on lane ``L`` with checksum ``c`` under key ``K``:

1. ``(K, c)`` is already achieved: succeed at once, create nothing.
2. ``L`` is held by one of its ancestors: create it ``deadlocked`` (fails the parent step).
3. The holder of ``L`` or an action queued on it has the same ``(K, c)``: join it
   (the parent step waits on that action instead), create nothing.
4. ``L`` is free: create it and start it.
5. Otherwise, if queueing would close a cycle in the lane wait-for graph (the holder of
   ``L`` transitively waits on a lane held by an ancestor): create it ``deadlocked``.
6. Otherwise queue it; every older pending action on ``L`` is ``superseded`` by it and
   hands over its waiting parents.
"""

from __future__ import annotations

import attrs

from stepkernel.domain.events import ActionSpec
from stepkernel.domain.ids import is_descendant
from stepkernel.domain.lifecycle import next_action_status
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACHIEVEMENT,
    LANE,
    ActionRecord,
    Dependent,
    LaneRecord,
    QueueEntry,
    StepRecord,
    WaitEdge,
    evolve,
)
from stepkernel.domain.status import ActionStatus, ActionTrigger
from stepkernel.domain.transaction import Tx


@attrs.frozen
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
        achieved = tx.achievement(spec.checksum_key)
        if achieved is not None and achieved.checksum == spec.checksum:
            return Submitted("achieved", None, (True, ActionStatus.SUCCEEDED))

    if spec.concurrency_key in ancestor_lanes:
        return _deadlocked(tx, spec, parent=parent, root_id=root_id, ancestor_lanes=ancestor_lanes)

    lane = tx.lane(spec.concurrency_key)
    if spec.checksum is not None:
        joined = _joinable(lane, spec)
        if joined is not None and not is_descendant(spec.id, joined):
            target = tx.action(joined)
            if target is not None and not target.status.terminal:
                if parent is not None and parent not in target.dependents:
                    tx.put(evolve(target, dependents=(*target.dependents, parent)))
                return Submitted("joined", joined)

    record = ActionRecord(
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
    )

    if lane.holder is None and not lane.queue:
        tx.put_lane(
            evolve(
                lane,
                holder=record.id,
                holder_checksum=_checksum_pair(record),
            )
        )
        start(tx, record)
        return Submitted("created", record.id)

    if _closes_cycle(tx, lane.key, ancestor_lanes):
        return _deadlocked(tx, spec, parent=parent, root_id=root_id, ancestor_lanes=ancestor_lanes)

    dependents = list(record.dependents)
    for entry in lane.queue:
        older = tx.action(entry.action_id)
        _drop_edges(tx, entry)
        if older is None or older.status is not ActionStatus.PENDING:
            continue
        for dependent in older.dependents:
            if dependent not in dependents:
                dependents.append(dependent)
        tx.put(
            evolve(
                older,
                status=next_action_status(older.status, ActionTrigger.SUPERSEDE, action_id=older.id),
                superseded_by=record.id,
                dependents=(),
                finished_at=tx.now,
            )
        )
        tx.mark_finished(older.id)
    record = evolve(record, dependents=tuple(dependents))
    tx.put(record)
    entry = QueueEntry(
        action_id=record.id,
        checksum_key=record.checksum_key,
        checksum=record.checksum,
        ancestor_lanes=ancestor_lanes,
    )
    tx.put_lane(evolve(lane, queue=(entry,)))
    _add_edges(tx, entry, lane.key)
    return Submitted("queued", record.id)


def start(tx: Tx, record: ActionRecord) -> ActionRecord:
    """Move a pending *record* (already the holder of its lane) to performing: arm its
    timeout, erase its scope's achievement, create its first step and ask to run it."""
    deadline = None if record.timeout is None else tx.now + record.timeout
    started = evolve(
        record,
        status=next_action_status(record.status, ActionTrigger.START, action_id=record.id),
        started_at=tx.now,
        deadline=deadline,
        steps=(StepRecord(index=0, name=record.step_names[0], started_at=tx.now),),
    )
    tx.put(started)
    if deadline is not None:
        tx.send(Message.timeout(record.id, deadline))
    if record.checksum is not None:
        tx.need([(ACHIEVEMENT, record.checksum_key)])
        if tx.achievement(record.checksum_key) is not None:
            tx.delete((ACHIEVEMENT, record.checksum_key))
    tx.send(Message.run(record.id, 0, 0, tx.now))
    return started


def leave_lane(tx: Tx, record: ActionRecord) -> None:
    """Take a finishing *record* off its lane; start the next queued action (FIFO)."""
    lane = tx.lane(record.concurrency_key)
    if lane.holder == record.id:
        if lane.queue:
            head, rest = lane.queue[0], lane.queue[1:]
            _drop_edges(tx, head)
            successor = tx.action(head.action_id)
            lane = evolve(lane, holder=None, holder_checksum=None, queue=rest)
            if successor is not None and successor.status is ActionStatus.PENDING:
                lane = evolve(
                    lane, holder=successor.id, holder_checksum=_checksum_pair(successor)
                )
                tx.put_lane(lane)
                start(tx, successor)
                return
        else:
            lane = evolve(lane, holder=None, holder_checksum=None)
    else:
        for entry in lane.queue:
            if entry.action_id == record.id:
                _drop_edges(tx, entry)
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
    record = ActionRecord(
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
        created_at=tx.now,
    )
    tx.put(
        evolve(
            record,
            status=next_action_status(record.status, ActionTrigger.DEADLOCK, action_id=record.id),
            finished_at=tx.now,
        )
    )
    tx.mark_finished(record.id)
    return Submitted("deadlocked", record.id, (False, ActionStatus.DEADLOCKED))


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


def _closes_cycle(tx: Tx, lane_key: str, ancestor_lanes: frozenset[str]) -> bool:
    """Would an action whose ancestors hold *ancestor_lanes* waiting on *lane_key* close a
    cycle?  Walks the live wait-for edges from *lane_key*."""
    if not ancestor_lanes:
        return False
    seen: set[str] = set()
    stack = [lane_key]
    while stack:
        key = stack.pop()
        if key in ancestor_lanes:
            return True
        if key in seen:
            continue
        seen.add(key)
        tx.need([(LANE, key)])
        stack.extend(edge.lane for edge in tx.lane(key).live_edges())
    return False


def _add_edges(tx: Tx, entry: QueueEntry, lane_key: str) -> None:
    tx.need([(LANE, key) for key in entry.ancestor_lanes])
    for key in sorted(entry.ancestor_lanes):
        held = tx.lane(key)
        if held.holder is None:
            continue
        edge = WaitEdge(lane=lane_key, action_id=entry.action_id, holder=held.holder)
        tx.put_lane(evolve(held, edges=(*held.live_edges(), edge)))


def _drop_edges(tx: Tx, entry: QueueEntry) -> None:
    tx.need([(LANE, key) for key in entry.ancestor_lanes])
    for key in sorted(entry.ancestor_lanes):
        held = tx.lane(key)
        kept = tuple(e for e in held.live_edges() if e.action_id != entry.action_id)
        if kept != held.edges:
            tx.put_lane(evolve(held, edges=kept))
