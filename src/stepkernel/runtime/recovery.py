"""The recovery sweep: find unfinished actions without a wake-up and give them one.

With one atomic commit per transition a wake-up is only missing when the queue lost
messages (an operator deleted rows, a store restored from an older backup).  The sweep
re-creates, with their deterministic ids, the run message of a pending step, the timer of
an armed timeout or of a timed wait, the after-callbacks message of a finished action,
and the settle message of a child that finished while its parent still waits on it.  Enqueueing is idempotent, so running the sweep twice is harmless.
"""

from __future__ import annotations

from stepkernel.domain.messages import Message, MessageKind, wait_message
from stepkernel.domain.records import ACTION, ActionRecord
from stepkernel.domain.status import ActionStatus, StepStatus
from stepkernel.ports.store import ActionQuery, WorkflowStore

_FINISHED = frozenset(
    {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED, ActionStatus.TIMED_OUT}
)


def missing_wakeups(store: WorkflowStore) -> list[Message]:
    """Messages that unfinished actions in *store* need and do not have.

    Safe to run while workers run.  The actions are read first, then the queue, then
    every action found wanting is read again: it only counts if it has not changed
    since the first read.  (A wake-up consumed between the two snapshots always comes
    with a change to its action -- the same commit acknowledges it -- so a moving action
    is never mistaken for a stranded one, and nothing is re-created needlessly.)
    """
    now = store.now()
    unfinished = store.find_actions(ActionQuery(statuses=frozenset({ActionStatus.PERFORMING})))
    # Indexed: only finished actions still owing callbacks, never every finished one.
    finished = store.find_actions(ActionQuery(statuses=_FINISHED, callbacks="pending"))
    queued = store.queued()
    queued_ids = {m.id for m in queued}
    queued_kinds: dict[str, set[MessageKind]] = {}
    for message in queued:
        queued_kinds.setdefault(message.action_id, set()).add(message.kind)
    wanted: list[tuple[ActionRecord, list[Message]]] = []
    for record in unfinished:
        kinds = queued_kinds.get(record.id, set())
        step = record.current_step
        if step is None:
            continue
        out: list[Message] = []
        if step.status is StepStatus.PENDING and MessageKind.RUN not in kinds:
            out.append(Message.run(record.id, step.index, step.attempt, now))
        if record.deadline is not None and MessageKind.TIMEOUT not in kinds:
            out.append(Message.timeout(record.id, record.deadline))
        if step.status is StepStatus.PERFORMING:
            out.extend(_lost_settlements(store, record, queued_ids, now))
        if out:
            wanted.append((record, out))
    for record in finished:
        if record.callbacks == "pending" and MessageKind.AFTER not in queued_kinds.get(
            record.id, set()
        ):
            wanted.append((record, [Message.after(record.id, now)]))
    if not wanted:
        return []
    current = store.load([(ACTION, record.id) for record, _ in wanted])
    return [
        message
        for record, messages in wanted
        if _unchanged(record, current.get((ACTION, record.id)))
        for message in messages
    ]


def _unchanged(first: ActionRecord, again: object) -> bool:
    return isinstance(again, ActionRecord) and again.version == first.version


def _lost_settlements(
    store: WorkflowStore, record: ActionRecord, queued_ids: set[str], now: float
) -> list[Message]:
    step = record.current_step
    assert step is not None
    links = dict(step.links)
    wakes = dict(step.wakes)
    out = []
    for dep in sorted(step.open):
        if dep in wakes:  # a timed wait: re-create its timer, due when it was due
            timer = wait_message(record.id, step.index, dep, wakes[dep])
            if timer.id not in queued_ids:
                out.append(timer)
            continue
        target = _serving(store, links.get(dep, dep))
        if target is None or not target.settled_for_parents:
            continue
        message = Message.settle(
            record.id,
            step.index,
            dep,
            ok=target.successful,
            status=target.status.value,
            at=now,
        )
        if message.id not in queued_ids:
            out.append(message)
    return out


def _serving(store: WorkflowStore, action_id: str) -> ActionRecord | None:
    """The action that actually serves a dependency on *action_id*: a superseded action
    handed its waiting parents to its successor, so its own ``superseded`` status is not
    the outcome (following the chain; ``None`` when a record is missing)."""
    seen: set[str] = set()
    while action_id not in seen:
        seen.add(action_id)
        target = store.load([(ACTION, action_id)])[(ACTION, action_id)]
        if not isinstance(target, ActionRecord):
            return None
        if target.status is not ActionStatus.SUPERSEDED or target.superseded_by is None:
            return target
        action_id = target.superseded_by
    return None
