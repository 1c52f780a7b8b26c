"""``decide(view, event, now) -> Decision``: the pure kernel.

Given the records an event touches and the current time *as a value*, return the new
record versions and the messages to enqueue.  No I/O, no clock reads, no randomness, no
user code: same inputs, same output.  An event that no longer applies (a duplicate
delivery, a message for a step that has moved on) yields an empty decision with outcome
``stale`` or ``duplicate``; misuse (completing an unknown or finished action) raises a
:class:`CompletionError`; a view missing records raises :class:`MissingRecordsError`
naming them.
"""

from __future__ import annotations

from stepkernel.domain.errors import (
    ActionFinishedError,
    ActionNotFoundError,
    CompletionConflictError,
    MissingRecordsError,
    NotOutboundError,
    StepkernelError,
)
from stepkernel.domain.events import (
    ActionSpec,
    CallbacksRan,
    CancelRequested,
    CompletionRequested,
    Event,
    MessageDelivered,
    RootSubmitted,
    ShortCircuit,
    StepBodiesRan,
    StepBodyRaised,
    StepBodyRan,
)
from stepkernel.domain.ids import child_id, wait_id
from stepkernel.domain.lanes import run_preload, submit
from stepkernel.domain.lifecycle import next_step_status
from stepkernel.domain.messages import Message, MessageKind, wait_message
from stepkernel.domain.progress import (
    advance,
    apply_completion,
    finish,
    replace_step,
    settle_dependency,
    settle_out,
    step_succeeded,
)
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    ActionRecord,
    Completion,
    Dependent,
    ErrorInfo,
    RecordKey,
    StepRecord,
    evolve,
)
from stepkernel.domain.status import ActionStatus, StepStatus, StepTrigger
from stepkernel.domain.transaction import GroupTx, Tx
from stepkernel.domain.view import Decision, View

COMPLETION_STATUSES = frozenset(
    {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED}
)


def decide(view: View, event: Event, now: float) -> Decision:
    """The kernel: what *event* changes, given *view* at time *now* (see module doc)."""
    tx = Tx(view, event.event_id, now)
    if isinstance(event, RootSubmitted):
        return _root_submitted(tx, event)
    if isinstance(event, StepBodyRan):
        return _body_ran(tx, event)
    if isinstance(event, StepBodyRaised):
        return _body_raised(tx, event)
    if isinstance(event, MessageDelivered):
        return _delivered(tx, event.message)
    if isinstance(event, CallbacksRan):
        return _callbacks_ran(tx, event)
    if isinstance(event, CompletionRequested):
        return _completion_requested(tx, event)
    if isinstance(event, CancelRequested):
        return _cancel_requested(tx, event)
    if isinstance(event, StepBodiesRan):
        return _bodies_ran(GroupTx(view, event.event_id, now), event)
    raise TypeError(f"not a kernel event: {type(event).__name__}")


def keys_for(event: Event) -> list[RecordKey]:
    """The records *event* surely reads: what the runtime loads before the first try."""
    if isinstance(event, RootSubmitted):
        keys = [(ACTION, event.spec.id), (LANE, event.spec.concurrency_key)]
        if event.spec.checksum is not None:
            keys.append((ACHIEVEMENT, event.spec.checksum_key))
        return keys
    if isinstance(event, StepBodyRan):
        keys = [(ACTION, event.action_id)]
        for child in event.children:
            if isinstance(child, ActionSpec):
                keys.append((LANE, child.concurrency_key))
                if child.checksum is not None:
                    keys.append((ACHIEVEMENT, child.checksum_key))
        return keys
    if isinstance(event, MessageDelivered):
        return [(ACTION, event.message.action_id)]
    if isinstance(event, StepBodiesRan):
        return list(dict.fromkeys(k for item in event.outcomes for k in keys_for(item)))
    return [(ACTION, event.action_id)]


# -- submission ----------------------------------------------------------------------------


def _root_submitted(tx: Tx, event: RootSubmitted) -> Decision:
    spec = event.spec
    tx.need([(ACTION, spec.id)])
    existing = tx.action(spec.id)
    if existing is not None:
        return tx.decision("exists", existing.id, existing.status)
    served = submit(tx, spec, parent=None, root_id=spec.id, ancestor_lanes=frozenset())
    if served.settled is not None and served.action_id is None:
        return tx.decision(served.outcome, None, served.settled[1])
    assert served.action_id is not None
    record = tx.action(served.action_id)
    assert record is not None
    return tx.decision(served.outcome, record.id, record.status)


# -- step bodies -----------------------------------------------------------------------------


def _bodies_ran(tx: GroupTx, event: StepBodiesRan) -> Decision:
    """Each outcome in order, in one decision: ``applied`` unless every one was stale.

    When a member needs records the view lacks, the members after it are each decided
    alone on the view, only to learn what they lack too: the error then names the keys
    of all of them, so a group costs a few loads, not one per member."""
    for position, item in enumerate(event.outcomes):
        tx.begin(item.event_id)
        try:
            _body_outcome(tx, item)
        except MissingRecordsError as need:
            wanted = dict.fromkeys(need.keys)
            for later in event.outcomes[position + 1 :]:
                wanted.update(dict.fromkeys(_lacking(tx.view, later, tx.now)))
            raise MissingRecordsError(
                f"need {len(wanted)} more record(s)", keys=tuple(wanted)
            ) from None
    applied = any(outcome != "stale" for outcome in tx.outcomes)
    return tx.group_decision("applied" if applied else "stale")


def _body_outcome(tx: Tx, item: StepBodyRan | StepBodyRaised) -> Decision:
    return _body_ran(tx, item) if isinstance(item, StepBodyRan) else _body_raised(tx, item)


def _lacking(view: View, item: StepBodyRan | StepBodyRaised, now: float) -> tuple[RecordKey, ...]:
    """The keys *item*, decided alone on *view*, asks for first (none: it decides, or
    fails otherwise -- which only the group's own decision may report)."""
    try:
        _body_outcome(Tx(view, item.event_id, now), item)
    except MissingRecordsError as need:
        return need.keys
    except StepkernelError:
        return ()
    return ()


def _current_pending_step(
    tx: Tx, action_id: str, step: int, attempt: int
) -> tuple[ActionRecord, StepRecord] | None:
    record = tx.action(action_id)
    if record is None or record.status is not ActionStatus.PERFORMING:
        return None
    current = record.current_step
    if (
        current is None
        or current.index != step
        or current.status is not StepStatus.PENDING
        or current.attempt != attempt
    ):
        return None
    return record, current


def _body_ran(tx: Tx, event: StepBodyRan) -> Decision:
    found = _current_pending_step(tx, event.action_id, event.step, event.attempt)
    if found is None:
        return tx.decision("stale")
    record, step = found
    if event.completion is not None:
        record = _keep_completion(record, event.completion)
    if event.failed is not None:
        failed = evolve(
            step,
            status=next_step_status(
                step.status, StepTrigger.FAIL, action_id=record.id, index=step.index
            ),
            error=event.failed,
            finished_at=tx.now,
        )
        finish(tx, record, ActionStatus.FAILED, error=event.failed, step=failed)
        return tx.decision("failed", record.id)

    status = next_step_status(
        step.status, StepTrigger.BODY_RAN, action_id=record.id, index=step.index
    )
    if not event.children and not event.waits:
        # Nothing fanned out: the step is done at once (one successor, not two).
        done = evolve(
            step,
            status=next_step_status(
                status, StepTrigger.SUCCEED, action_id=record.id, index=step.index
            ),
            finished_at=tx.now,
        )
        step_succeeded(tx, record, done)
        return tx.decision("applied", record.id)
    dependencies: list[str] = []
    settled: set[str] = set()
    failures: set[str] = set()
    links: list[tuple[str, str]] = []
    lanes = record.ancestor_lanes | {record.concurrency_key}
    for ordinal, child in enumerate(event.children):
        dep = child_id(record.id, step.index, ordinal)
        dependencies.append(dep)
        if isinstance(child, ShortCircuit):
            settled.add(dep)
            if child.status is not ActionStatus.SUCCEEDED:
                failures.add(dep)
            continue
        served = submit(
            tx,
            child if child.id == dep else evolve(child, id=dep),  # the runtime names it
            parent=Dependent(action_id=record.id, step=step.index, dep_id=dep),
            root_id=record.root_id,
            ancestor_lanes=lanes,
        )
        if served.action_id is not None and served.action_id != dep:
            links.append((dep, served.action_id))
        if served.settled is not None:
            settled.add(dep)
            if not served.settled[0]:
                failures.add(dep)
    wakes: list[tuple[str, float]] = []
    for ordinal, seconds in enumerate(event.waits):
        dep = wait_id(record.id, step.index, ordinal)
        dependencies.append(dep)
        wakes.append((dep, tx.now + seconds))
        tx.send(wait_message(record.id, step.index, dep, tx.now + seconds))
    # Submitting children never touches this record (a child cannot join, supersede or
    # queue behind its own ancestor), so *record* is still current.
    current = record
    performing = evolve(
        step,
        status=status,
        dependencies=tuple(dependencies),
        settled=frozenset(settled),
        failures=frozenset(failures),
        links=tuple(links),
        wakes=tuple(wakes),
    )
    advance(tx, current, performing)
    return tx.decision("applied", record.id)


def _keep_completion(record: ActionRecord, completion: CompletionRequested) -> ActionRecord:
    if record.early_completion is not None or record.completion_id is not None:
        return record
    return evolve(
        record,
        early_completion=Completion(
            id=completion.completion_id, status=completion.status, payload=completion.payload
        ),
    )


def _body_raised(tx: Tx, event: StepBodyRaised) -> Decision:
    found = _current_pending_step(tx, event.action_id, event.step, event.attempt)
    if found is None:
        return tx.decision("stale")
    record, step = found
    if event.retry_at is not None:
        retried = evolve(step, attempt=step.attempt + 1, error=event.error)
        tx.put(replace_step(record, retried))
        tx.send(
            Message.run(
                record.id,
                step.index,
                retried.attempt,
                event.retry_at,
                preload=run_preload(record, step.index),
            )
        )
        return tx.decision("retrying", record.id)
    failed = evolve(
        step,
        status=next_step_status(
            step.status, StepTrigger.FAIL, action_id=record.id, index=step.index
        ),
        error=event.error,
        finished_at=tx.now,
    )
    finish(tx, record, ActionStatus.FAILED, error=event.error, step=failed)
    return tx.decision("failed", record.id)


# -- delivered messages ----------------------------------------------------------------------


def _delivered(tx: Tx, message: Message) -> Decision:
    if message.kind is MessageKind.SETTLE:
        return _settle(tx, message)
    if message.kind is MessageKind.TIMEOUT:
        return _timeout(tx, message)
    if message.kind is MessageKind.CANCEL:
        record = tx.action(message.action_id)
        while (
            record is not None
            and record.status is ActionStatus.SUPERSEDED
            and record.superseded_by is not None
        ):
            # The cut parent's wait moved to the action that superseded this one.
            record = tx.action(record.superseded_by)
        if record is None or record.status.terminal:
            return tx.decision("stale")
        # Only the very child the parent created is its own to cancel; what superseded
        # it belongs to someone else (another tree, or a root): the parent lets go.
        own = message.ok and record.id == message.action_id
        others = tuple(d for d in record.dependents if d.action_id != message.dep)
        if message.dep and (others or not own):
            # Shared (it superseded another waiter's child): keep it for the others.
            if len(others) == len(record.dependents):
                return tx.decision("stale")  # already let go (a duplicate delivery)
            tx.put(evolve(record, dependents=others))
            return tx.decision("detached", record.id)
        finish(
            tx,
            record,
            ActionStatus.CANCELLED,
            error=_cancel_error(message.status or "cancelled"),
        )
        return tx.decision("cancelled", record.id)
    raise TypeError(f"message kind {message.kind.value!r} is not decided by the kernel")


def _settle(tx: Tx, message: Message) -> Decision:
    outcome = settle_dependency(tx, message.action_id, message.step, message.dep, ok=message.ok)
    return tx.decision(outcome, message.action_id if outcome == "applied" else None)


def _timeout(tx: Tx, message: Message) -> Decision:
    record = tx.action(message.action_id)
    if record is None or record.status is not ActionStatus.PERFORMING or record.deadline is None:
        return tx.decision("stale")
    if tx.now < record.deadline:
        # Fired early (clock skew between the scheduler and the store): re-arm.
        rearmed = Message.timeout(record.id, record.deadline)
        tx.send(evolve(rearmed, id=f"{rearmed.id}:re{tx.now!r}"))
        return tx.decision("rearmed", record.id)
    finish(
        tx,
        record,
        ActionStatus.TIMED_OUT,
        error=_timeout_error(record),
    )
    return tx.decision("timed_out", record.id)


def _timeout_error(record: ActionRecord) -> ErrorInfo:
    return ErrorInfo.of("Timeout", f"no result within {record.timeout}s")


def _cancel_error(reason: str) -> ErrorInfo:
    return ErrorInfo.of("Cancelled", reason)


# -- callbacks and outside commands --------------------------------------------------------


def _callbacks_ran(tx: Tx, event: CallbacksRan) -> Decision:
    record = tx.action(event.action_id)
    if record is None or record.callbacks != "pending":
        return tx.decision("stale")
    record = evolve(
        record,
        callbacks="failed" if event.error is not None else "ok",
        error=record.error or event.error,
    )
    settle_out(tx, record)
    return tx.decision("applied", record.id, record.status)


def _completion_requested(tx: Tx, event: CompletionRequested) -> Decision:
    record = tx.action(event.action_id)
    if record is None:
        raise ActionNotFoundError(
            f"no action {event.action_id!r} to complete", action_id=event.action_id
        )
    if record.completion_id == event.completion_id or (
        record.early_completion is not None and record.early_completion.id == event.completion_id
    ):
        return tx.decision("duplicate", record.id, record.status)
    if record.status.terminal:
        raise ActionFinishedError(
            f"action {record.id} already {record.status.value}",
            action_id=record.id,
            status=record.status.value,
        )
    if not record.outbound:
        raise NotOutboundError(
            f"action {record.id} ({record.name}) is not outbound", action_id=record.id
        )
    if event.status not in COMPLETION_STATUSES:
        raise NotOutboundError(f"cannot complete as {event.status.value!r}", action_id=record.id)
    completion = Completion(id=event.completion_id, status=event.status, payload=event.payload)
    if record.awaiting_completion:
        done = apply_completion(tx, record, completion)
        return tx.decision("applied", done.id, done.status)
    if record.early_completion is not None:
        raise CompletionConflictError(
            f"action {record.id} already holds completion {record.early_completion.id!r}",
            action_id=record.id,
            kept=record.early_completion.id,
            refused=event.completion_id,
        )
    tx.put(evolve(record, early_completion=completion))
    return tx.decision("kept", record.id, record.status)


def _cancel_requested(tx: Tx, event: CancelRequested) -> Decision:
    record = tx.action(event.action_id)
    if record is None:
        raise ActionNotFoundError(
            f"no action {event.action_id!r} to cancel", action_id=event.action_id
        )
    if record.status.terminal:
        raise ActionFinishedError(
            f"action {record.id} already {record.status.value}",
            action_id=record.id,
            status=record.status.value,
        )
    done = finish(tx, record, ActionStatus.CANCELLED, error=_cancel_error(event.reason))
    return tx.decision("cancelled", done.id, done.status)
