"""The exhaustive search: every schedule, depth first, optionally reduced.

:func:`explore` re-executes the scenario once per path
(:func:`~stepkernel.testing.schedules.execution.execute`), with :class:`_DepthFirst`
choosing: it follows the previous path up to its deepest point with an untried
alternative, takes that, then the first choice everywhere after.  With ``reduce`` it
keeps sleep sets of commuting deliveries and stops at converged duplicates (see the
package docstring).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import attrs

from stepkernel.testing.schedules.execution import DELIVER, TWICE, Choice, Chooser, Tally, execute
from stepkernel.testing.schedules.footprints import Footprint
from stepkernel.testing.schedules.results import (
    Exploration,
    NondeterministicScenario,
    ScheduleLimitExceeded,
)
from stepkernel.testing.schedules.world import Scenario


@attrs.define
class _Point:
    """One point of the current path: the choices offered, the one taken and what it
    touched, the sleep set on arrival and the alternatives already explored here."""

    labels: tuple[str, ...]
    index: int
    asleep: dict[str, Footprint]
    footprint: Footprint | None = None
    explored: dict[str, Footprint] = attrs.field(factory=dict)
    left: dict[str, str] = attrs.field(factory=dict)
    """The fingerprint each single delivery left, for its duplicate to compare."""


class _DepthFirst(Chooser):
    """The stateless depth-first search over choice sequences, with sleep sets when
    *reduce* (see the package docstring)."""

    def __init__(self, *, reduce: bool) -> None:
        self.reduce = reduce
        self.path: list[_Point] = []

    def choose(self, depth: int, choices: Sequence[Choice]) -> int | None:
        labels = tuple(c.label for c in choices)
        if depth < len(self.path):  # replaying the current path
            point = self.path[depth]
            if point.labels != labels:
                raise NondeterministicScenario(
                    f"at choice {depth + 1}, {list(point.labels)} were offered before, "
                    f"{list(labels)} now"
                )
            return point.index
        asleep = self._asleep_after(depth - 1) if self.reduce and depth else {}
        for index, label in enumerate(labels):
            if label not in asleep:
                self.path.append(_Point(labels, index, asleep))
                return index
        return None

    def _asleep_after(self, depth: int) -> dict[str, Footprint]:
        point = self.path[depth]
        taken = point.footprint
        assert taken is not None
        candidates = {**point.asleep, **point.explored}
        return {label: fp for label, fp in candidates.items() if fp.commutes_with(taken)}

    def touched(self, depth: int, footprint: Footprint, state: Callable[[], str]) -> bool:
        point = self.path[depth]
        if point.footprint is not None:  # replaying
            return False
        point.footprint = footprint
        if not self.reduce:
            return False
        label = point.labels[point.index]
        if label.startswith(TWICE):
            single = point.left.get(DELIVER + label.removeprefix(TWICE))
            return single is not None and single == state()
        if label.startswith(DELIVER) and TWICE + label.removeprefix(DELIVER) in point.labels:
            point.left[label] = state()
        return False

    def advance(self) -> bool:
        """Move to the next untried alternative at the deepest point that has one;
        ``False`` when the search is complete."""
        while self.path:
            point = self.path[-1]
            assert point.footprint is not None
            point.explored[point.labels[point.index]] = point.footprint
            for index in range(point.index + 1, len(point.labels)):
                if point.labels[index] not in point.asleep:
                    point.index, point.footprint = index, None
                    return True
            self.path.pop()
        return False


def explore(
    scenario: Scenario,
    *,
    duplicates: bool = True,
    reduce: bool = True,
    limit: int = 20_000,
    max_depth: int = 200,
) -> Exploration:
    """Run *scenario* under every schedule (see the package docstring) and return what
    was covered.

    *duplicates* offers each due message a second delivery (once per message id and
    schedule); *reduce* skips reorderings of commuting deliveries (sleep sets).  Raises
    :class:`ScheduleFailure` at the first failing schedule, :class:`ScheduleLimitExceeded`
    when more than *limit* executions are needed, and :class:`NondeterministicScenario`
    when a replayed point offers other choices.
    """
    if limit < 1 or max_depth < 1:
        raise ValueError("limit and max_depth must be >= 1")
    search = _DepthFirst(reduce=reduce)
    tally = Tally()
    outcomes: Counter[str] = Counter()
    finals: set[str] = set()
    endings: Counter[str] = Counter()
    deepest = 0
    while True:
        if endings.total() == limit:
            raise ScheduleLimitExceeded(limit)
        ran = execute(scenario, search, duplicates=duplicates, max_depth=max_depth, tally=tally)
        endings[ran.ending] += 1
        if ran.ending == "finished":
            deepest = max(deepest, ran.depth)
            finals.add(ran.world.fingerprint())
            if ran.outcome is not None:
                outcomes[ran.outcome] += 1
        if not search.advance():
            break
    return Exploration(
        schedules=endings["finished"],
        redundant=endings["redundant"],
        converged=endings["converged"],
        max_depth=deepest,
        deliveries=tally.deliveries,
        duplicates=tally.duplicates,
        events=tally.events,
        outcomes=dict(outcomes),
        final_states=frozenset(finals),
    )
