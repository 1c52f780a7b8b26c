"""The ledger: what the environment did and heard, kept outside the system under test.

The simulator writes to the ledger as it acts -- roots submitted, step bodies invoked
(action, step, attempt) and what each invocation returned, completions sent and the
answers received -- and never reads it back through the store.  :meth:`Ledger.report`
then compares it with the final records: every submitted root must exist exactly once,
every completion recorded on an action must be one that was sent to that action, every
completion that was applied must still be there, and nothing may appear that nobody
asked for.  Lost, duplicated and unexpected must all be empty.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping

from attrs import define, field, frozen

from stepkernel.domain.records import ActionRecord
from stepkernel.domain.status import StepStatus
from stepkernel.testing.invariants import Violation

BodyKey = tuple[str, int, int]
"""(action id, step index, attempt)."""


@frozen
class Outcome:
    """What one body invocation returned: how many children and waits it fanned out,
    and whether it failed (marked failed or raised)."""

    children: int
    waits: int
    failed: bool


@frozen
class SentCompletion:
    """A completion the environment sent, and the answer it got back."""

    action_id: str
    completion_id: str
    status: str
    kind: str  # "intended", "early", "duplicate" or "unknown"
    answer: str  # the outcome ("applied", "kept", "duplicate") or the error's type


@frozen
class LedgerReport:
    """Lost, duplicated and unexpected work found by :meth:`Ledger.report`."""

    lost: tuple[str, ...]
    duplicated: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def __str__(self) -> str:
        return (
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"unexpected={len(self.unexpected)}"
            + "".join(f"\n  lost: {x}" for x in self.lost[:10])
            + "".join(f"\n  duplicated: {x}" for x in self.duplicated[:10])
            + "".join(f"\n  unexpected: {x}" for x in self.unexpected[:10])
        )


@define
class Ledger:
    """The environment's own record of a simulation (see the module docstring)."""

    submitted: dict[str, list[str | None]] = field(factory=dict)
    """Idempotency key -> the root ids the submissions were answered with."""
    body_runs: Counter[BodyKey] = field(factory=Counter)
    outcomes: defaultdict[BodyKey, list[Outcome]] = field(factory=lambda: defaultdict(list))
    faults: Counter[BodyKey] = field(factory=Counter)
    completions: list[SentCompletion] = field(factory=list)

    # -- writing -----------------------------------------------------------------------------

    def submission(self, key: str, root_id: str | None) -> None:
        self.submitted.setdefault(key, []).append(root_id)

    def body_started(self, key: BodyKey) -> int:
        """Count an invocation of the body *key*; returns which one this is (1-based)."""
        self.body_runs[key] += 1
        return self.body_runs[key]

    def body_returned(self, key: BodyKey, outcome: Outcome) -> None:
        self.outcomes[key].append(outcome)

    def fault(self, key: BodyKey) -> None:
        """A fault hit an attempt of *key* (it may legitimately run once more)."""
        self.faults[key] += 1

    def completion(self, sent: SentCompletion) -> None:
        self.completions.append(sent)

    # -- checking ----------------------------------------------------------------------------

    def report(self, actions: Mapping[str, ActionRecord]) -> LedgerReport:
        """Compare the ledger with the final *actions* (id -> record)."""
        lost: list[str] = []
        duplicated: list[str] = []
        unexpected: list[str] = []
        answered: set[str] = set()
        for key, answers in sorted(self.submitted.items()):
            ids = {a for a in answers if a is not None}
            answered |= ids
            if len(ids) > 1:
                duplicated.append(f"submission {key!r} answered with {sorted(ids)}")
            for action_id in sorted(ids):
                if action_id not in actions:
                    lost.append(f"submission {key!r}: answered {action_id}, which is not stored")
        for record in actions.values():
            if record.parent is None and record.id not in answered:
                unexpected.append(f"root {record.id} that no submission was answered with")
        sent: dict[str, set[str]] = defaultdict(set)
        for c in self.completions:
            if c.kind == "unknown":
                if c.answer != "ActionNotFoundError":
                    unexpected.append(
                        f"completion of unknown action {c.action_id} answered {c.answer}"
                    )
                continue
            sent[c.action_id].add(c.completion_id)
        for record in actions.values():
            cid = record.completion_id
            if cid is None or cid.startswith("job:"):  # jobs complete their own action
                continue
            if cid not in sent.get(record.id, set()):
                unexpected.append(
                    f"action {record.id} completed by {cid!r}, which was never sent to it"
                )
        for c in self.completions:
            if c.kind == "unknown" or c.answer != "applied":
                continue
            target = actions.get(c.action_id)
            if target is None or target.completion_id != c.completion_id:
                lost.append(
                    f"completion {c.completion_id!r} applied to {c.action_id}, but the action "
                    f"now holds {None if target is None else target.completion_id!r}"
                )
        applied = Counter(
            (c.action_id, c.completion_id) for c in self.completions if c.answer == "applied"
        )
        for (action_id, cid), n in sorted(applied.items()):
            if n > 1:
                duplicated.append(f"completion {cid!r} of {action_id} applied {n} times")
        return LedgerReport(tuple(lost), tuple(duplicated), tuple(unexpected))

    def check_bodies(self, actions: Mapping[str, ActionRecord]) -> list[Violation]:
        """Bodies ran at most once plus the faults that hit their attempt, and every
        outcome applied in *actions* is one that an invocation of that attempt returned
        (so at least one ran)."""
        found = []
        for (action_id, index, attempt), runs in sorted(self.body_runs.items()):
            allowed = 1 + self.faults[(action_id, index, attempt)]
            if runs > allowed:
                found.append(
                    Violation(
                        "body-runs",
                        f"attempt {attempt} ran {runs} times with {allowed - 1} fault(s)",
                        action_id=action_id,
                        step=index,
                    )
                )
        for record in actions.values():
            for step in record.steps:
                if step.status not in (StepStatus.PERFORMING, StepStatus.SUCCEEDED):
                    continue
                outcomes = self.outcomes.get((record.id, step.index, step.attempt), [])
                if not outcomes:
                    problem = f"outcome of attempt {step.attempt} applied but no body returned"
                elif not any(
                    o.children + o.waits == len(step.dependencies) and not o.failed
                    for o in outcomes
                ):
                    problem = (
                        f"applied {len(step.dependencies)} dependencies, which no invocation "
                        f"of attempt {step.attempt} returned"
                    )
                else:
                    continue
                found.append(Violation("body-runs", problem, action_id=record.id, step=step.index))
        return found
