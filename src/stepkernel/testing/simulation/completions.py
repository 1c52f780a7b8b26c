"""The simulated outside world completing outbound actions: on time, early, twice,
or addressed to actions that do not exist (see the ``*_completion`` faults)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepkernel.domain.errors import StepkernelError
from stepkernel.domain.records import ActionRecord
from stepkernel.domain.status import ActionStatus
from stepkernel.testing.simulation.ledger import SentCompletion

if TYPE_CHECKING:
    from stepkernel.testing.simulation.run import _Run


def _outbound_candidates(run: _Run) -> list[ActionRecord]:
    return sorted(
        (r for r in run.actions().values() if r.outbound and not r.status.terminal),
        key=lambda r: r.id,
    )


def complete_some(run: _Run) -> None:
    """Maybe complete one outbound action (early, if the faults allow), maybe twice,
    maybe one that does not exist."""
    rng = run.rng
    if run.faults.unknown_completion and rng.random() < run.faults.unknown_completion * 5:
        run.coverage["fault:unknown_completion"] += 1
        _send(run, f"unknown-{rng.randrange(10**6)}", "succeeded", None, "unknown")
    candidates = _outbound_candidates(run)
    if not candidates:
        return
    record = rng.choice(candidates)
    if not record.awaiting_completion:
        if rng.random() >= run.faults.early_completion * 5:
            return
        run.coverage["fault:early_completion"] += 1
        kind = "early"
    else:
        kind = "intended"
    answer = run.workload.outbound(run.app.get(record.id))
    if answer is None:
        return
    status, payload = _answer(answer)
    _send(run, record.id, status, payload, kind)
    if rng.random() < run.faults.duplicate_completion * 5:
        run.coverage["fault:duplicate_completion"] += 1
        _send(run, record.id, status, payload, "duplicate")


def _send(run: _Run, action_id: str, status: str, payload: Any, kind: str) -> None:
    # One id per (action, answer): a duplicate is recognisable, a misaddressed one too.
    cid = f"sim:{action_id}:{status}"
    try:
        answer = run.app.complete(action_id, status, payload, completion_id=cid).outcome
    except StepkernelError as exc:
        answer = type(exc).__name__
    run.ledger.completion(SentCompletion(action_id, cid, status, kind, answer))


def complete_waiting(run: _Run) -> bool:
    """Complete every outbound action waiting for it, as intended; whether any was."""
    sent = False
    for record in _outbound_candidates(run):
        if not record.awaiting_completion:
            continue
        answer = run.workload.outbound(run.app.get(record.id))
        if answer is None:
            continue
        status, payload = _answer(answer)
        _send(run, record.id, status, payload, "intended")
        sent = True
    return sent


def _answer(answer: Any) -> tuple[str, Any]:
    payload = None
    if isinstance(answer, tuple):
        answer, payload = answer
    status = ActionStatus.SUCCEEDED if answer is True else ActionStatus(answer)
    return status.value, payload
