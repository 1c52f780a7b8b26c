"""What an exploration reports: its coverage, or the error that stopped it.

:class:`Exploration` counts what :func:`~stepkernel.testing.schedules.explore` ran;
:class:`ScheduleFailure` names the choices of a failing schedule,
:class:`ScheduleLimitExceeded` says the search was cut short (so nothing was proven),
and :class:`NondeterministicScenario` says a scenario did not replay the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from attrs import frozen

from stepkernel.testing.invariants import Violation


@frozen
class Exploration:
    """What :func:`explore` ran.

    ``schedules``: finished schedules (all of them, or one per class of equivalent
    interleavings when reduced); ``redundant``: paths dropped because every choice left
    was asleep; ``converged``: paths stopped at a duplicate that left the state the
    single delivery left; ``max_depth``: most choices in one schedule; ``deliveries``:
    messages handled (copies included); ``duplicates``: twice-delivered messages;
    ``events``: outside events fired; ``outcomes``: how many schedules ended with each
    label the scenario's check returned; ``final_states``: the distinct fingerprints
    (:meth:`World.fingerprint`) of the final states.
    """

    schedules: int
    redundant: int
    converged: int
    max_depth: int
    deliveries: int
    duplicates: int
    events: int
    outcomes: Mapping[str, int]
    final_states: frozenset[str]

    def __str__(self) -> str:
        seen = ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.schedules} schedules ({self.redundant} redundant and {self.converged} "
            f"converged paths stopped early; max depth {self.max_depth}; "
            f"{self.deliveries} deliveries, {self.duplicates} duplicated, "
            f"{self.events} events; {len(self.final_states)} final states)"
            + (f"; outcomes {seen}" if seen else "")
        )


class ScheduleLimitExceeded(AssertionError):
    """The scenario needs more than ``limit`` executions: the search stopped, so nothing
    was proven about the rest.  Raise the limit or shrink the scenario."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"more than {limit} executions: the exploration would not be exhaustive "
            "(raise limit= or shrink the scenario)"
        )


class ScheduleFailure(AssertionError):
    """One schedule broke an invariant or its scenario's check, or raised.

    ``schedule`` holds the choices made (replay them with :func:`run_schedule`),
    ``violations`` the invariant violations, ``cause`` the exception, if any.
    """

    def __init__(
        self,
        schedule: Sequence[str],
        reason: str,
        *,
        violations: Sequence[Violation] = (),
        cause: BaseException | None = None,
    ) -> None:
        self.schedule = tuple(schedule)
        self.violations = tuple(violations)
        self.cause = cause
        lines = [f"schedule failed: {reason}"]
        lines += [f"  {v}" for v in self.violations[:20]]
        if cause is not None:
            lines.append(f"  {type(cause).__name__}: {cause}")
        lines.append("choices (replay with run_schedule(scenario, schedule)):")
        lines += [f"  {n}. {label}" for n, label in enumerate(self.schedule, 1)]
        super().__init__("\n".join(lines))


class NondeterministicScenario(RuntimeError):
    """Replaying a recorded choice found other choices at that point: the scenario does
    not behave the same way twice (wall clock, random ids, set order...)."""
