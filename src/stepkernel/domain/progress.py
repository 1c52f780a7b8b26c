"""Moving actions forward: settling dependencies, advancing steps, finishing, telling
parents.

``finish`` is the single place an action reaches a terminal status from ``performing``
or ``pending``: it records the outcome, cuts the in-flight children of a cancelled or
timed-out action, releases the lane, and either asks for the after callbacks or settles
the action into its waiting parents (granting the achievement on success).
"""

from __future__ import annotations

from stepkernel.domain.ids import is_wait
from stepkernel.domain.lanes import leave_lane, run_preload
from stepkernel.domain.lifecycle import next_action_status, next_step_status
from stepkernel.domain.messages import Message
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    AchievementRecord,
    ActionRecord,
    Completion,
    ErrorInfo,
    StepRecord,
    evolve,
)
from stepkernel.domain.status import ActionStatus, ActionTrigger, StepStatus, StepTrigger
from stepkernel.domain.transaction import Tx

_TRIGGER_FOR = {
    ActionStatus.SUCCEEDED: ActionTrigger.SUCCEED,
    ActionStatus.FAILED: ActionTrigger.FAIL,
    ActionStatus.CANCELLED: ActionTrigger.CANCEL,
    ActionStatus.TIMED_OUT: ActionTrigger.TIME_OUT,
}


def replace_step(record: ActionRecord, step: StepRecord) -> ActionRecord:
    """*record* with its current (last) step replaced by *step*."""
    return evolve(record, steps=(*record.steps[:-1], step))


def advance(tx: Tx, record: ActionRecord, step: StepRecord) -> ActionRecord:
    """Make *step* the current step of *record*; if it has nothing open, finish it and
    move on: next step, outbound wait, or the end of the action."""
    # Nothing open <=> as many settled as dependencies (settled ids are distinct
    # dependencies: StepRecord's validator), without building the open set.
    if step.status is not StepStatus.PERFORMING or len(step.settled) < len(step.dependencies):
        record = replace_step(record, step)
        tx.put(record)
        return record
    if step.failures:
        failed_step = evolve(
            step,
            status=next_step_status(
                step.status, StepTrigger.FAIL, action_id=record.id, index=step.index
            ),
            error=step.error or _child_failure(step),
            finished_at=tx.now,
        )
        return finish(tx, record, ActionStatus.FAILED, error=failed_step.error, step=failed_step)
    done = evolve(
        step,
        status=next_step_status(
            step.status, StepTrigger.SUCCEED, action_id=record.id, index=step.index
        ),
        finished_at=tx.now,
    )
    return step_succeeded(tx, record, done)


def step_succeeded(tx: Tx, record: ActionRecord, done: StepRecord) -> ActionRecord:
    """*done* (the current step, succeeded) replaces the current step; start the next step,
    wait for the outside completion, or finish the action."""
    step = done
    if step.index + 1 < len(record.step_names):
        index = step.index + 1
        record = evolve(
            record,
            steps=(
                *record.steps[:-1],
                done,
                StepRecord(index=index, name=record.step_names[index], started_at=tx.now),
            ),
        )
        tx.put(record)
        tx.send(Message.run(record.id, index, 0, tx.now, preload=run_preload(record, index)))
        return record
    if record.outbound:
        if record.early_completion is not None:
            return apply_completion(tx, record, record.early_completion, step=done)
        record = evolve(record, steps=(*record.steps[:-1], done), awaiting_completion=True)
        tx.put(record)
        return record
    return finish(tx, record, ActionStatus.SUCCEEDED, step=done)


def apply_completion(
    tx: Tx, record: ActionRecord, completion: Completion, *, step: StepRecord | None = None
) -> ActionRecord:
    """Finish an outbound *record* that is waiting, with an outside *completion*."""
    error = None
    if completion.status is not ActionStatus.SUCCEEDED:
        error = ErrorInfo.of("OutboundCompletion", f"completed as {completion.status.value}")
    return finish(
        tx,
        record,
        completion.status,
        error=error,
        step=step,
        early_completion=None,
        completion_id=completion.id,
        output=completion.payload,
    )


def finish(
    tx: Tx,
    record: ActionRecord,
    status: ActionStatus,
    *,
    error: ErrorInfo | None = None,
    step: StepRecord | None = None,
    **changes: object,
) -> ActionRecord:
    """Move *record* to terminal *status* and do everything that goes with it.

    *step*, if given, replaces the current step first; *changes* are further fields to
    set.  Everything is folded into one successor record.
    """
    trigger = _TRIGGER_FOR[status]
    steps = record.steps
    if step is not None:
        steps = (*steps[:-1], step)
    current = steps[-1] if steps else None
    cut = None
    if current is not None and not current.status.terminal:
        cut = current
        current = evolve(
            current,
            status=next_step_status(
                current.status, StepTrigger.FAIL, action_id=record.id, index=current.index
            ),
            error=current.error or error or ErrorInfo.of(status.value, "action ended"),
            finished_at=tx.now,
        )
        steps = (*steps[:-1], current)
    final = next_action_status(record.status, trigger, action_id=record.id)
    record = evolve(
        record,
        status=final,
        steps=steps,
        finished_at=tx.now,
        awaiting_completion=False,
        error=record.error or error,
        callbacks="pending" if status in record.after else record.callbacks,
        **changes,
    )
    if cut is not None:
        _cut_children(tx, record, cut)
    leave_lane(tx, record)
    tx.mark_finished(record.id)
    if record.callbacks == "pending":
        tx.put(record)
        tx.send(Message.after(record.id, tx.now))
        return record
    return settle_out(tx, record)


def settle_out(tx: Tx, record: ActionRecord) -> ActionRecord:
    """Tell every waiting parent how *record* ended; grant the achievement on success."""
    ok = record.successful
    if ok and record.checksum is not None:
        # Granted only if no other action started in the scope since this one did.
        tx.need([(ACHIEVEMENT, record.checksum_key)])
        scope = tx.achievement(record.checksum_key)
        if scope is not None and scope.claimed_by == record.id:
            tx.put(
                AchievementRecord(
                    key=record.checksum_key, checksum=record.checksum, action_id=record.id
                )
            )
    tx.put(record)
    # Settle straight into the waiting steps, in this same commit: the last child
    # advances its parent here (and a finished parent its own parents, and so on).
    tx.need([(ACTION, d.action_id) for d in record.dependents])
    for dependent in record.dependents:
        settle_dependency(tx, dependent.action_id, dependent.step, dependent.dep_id, ok=ok)
    return record


def settle_dependency(tx: Tx, action_id: str, step_index: int, dep: str, *, ok: bool) -> str:
    """Mark *dep* settled (``ok`` or not) in step *step_index* of *action_id*, advancing
    it when nothing else is open.  Returns ``applied``, ``duplicate`` (already settled:
    settlement is a set, never a count) or ``stale`` (that step no longer waits)."""
    record = tx.action(action_id)
    if record is None or record.status is not ActionStatus.PERFORMING:
        return "stale"
    step = record.current_step
    if (
        step is None
        or step.index != step_index
        or step.status is not StepStatus.PERFORMING
        or dep not in step.dependencies
    ):
        return "stale"
    if dep in step.settled:
        return "duplicate"
    failures = step.failures if ok else step.failures | {dep}
    advance(tx, record, evolve(step, settled=step.settled | {dep}, failures=failures))
    return "applied"


def _cut_children(tx: Tx, record: ActionRecord, step: StepRecord) -> None:
    """Cut the in-flight actions this step waits on.  Children it created are cancelled
    (or, when another step waits on them too, only let go of); joined actions it does not
    own are just let go of, through the same message."""
    links = dict(step.links)
    for dep in step.dependencies:
        if dep in step.settled or is_wait(dep):
            continue
        target = links.get(dep, dep)
        tx.send(
            Message.cancel(
                target,
                f"parent {record.status.value}",
                tx.now,
                parent=record.id,
                own=dep not in links,
            )
        )


def _child_failure(step: StepRecord) -> ErrorInfo:
    failed = sorted(step.failures)
    return ErrorInfo.of(
        "ChildFailed", f"{len(failed)} dependency(ies) unsuccessful: {', '.join(failed)}"
    )
