"""One schedule: the choices offered at each point, and running them on a fresh world.

:func:`execute` runs a scenario once, asking a :class:`Chooser` to pick among the
choices (:class:`Choice`) offered at each point (:func:`_choices`, in the order the
package docstring gives), checking the invariants after every choice and the healed state and
the scenario's check at the end; it raises
:class:`~stepkernel.testing.schedules.ScheduleFailure` naming the choices made.
:func:`run_schedule` replays a recorded schedule this way; the depth-first search in
:mod:`stepkernel.testing.schedules.search` is the other chooser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from attrs import frozen

from stepkernel.testing.schedules.footprints import Footprint
from stepkernel.testing.schedules.results import NondeterministicScenario, ScheduleFailure
from stepkernel.testing.schedules.world import Scenario, World

_EVERYTHING = Footprint(everything=True)
"""The footprint of an outside event or of time passing: commutes with nothing."""


@frozen
class Choice:
    """One choice offered at a point: its ``label`` (what a schedule records) and what
    it does (``kind``; ``target`` message or event, ``twice``, ``when`` to advance to)."""

    label: str
    kind: str  # "deliver", "event" or "advance"
    target: str = ""
    twice: bool = False
    when: float = 0.0


class Chooser:
    """Picks a choice at each point of one execution (``None``: every choice is asleep,
    drop this path) and learns what the picked one touched."""

    def choose(self, depth: int, choices: Sequence[Choice]) -> int | None:
        raise NotImplementedError

    def touched(self, depth: int, footprint: Footprint, state: Callable[[], str]) -> bool:
        """The choice picked at *depth* touched *footprint* and left the state whose
        fingerprint *state* computes; ``True`` stops the path there (converged)."""
        return False


@frozen
class _Ran:
    """How one execution ended: ``finished``, ``redundant`` or ``converged``."""

    ending: str
    world: World
    depth: int
    outcome: str | None = None


DELIVER = "deliver "
TWICE = "deliver twice "


@attrs.define
class Tally:
    """What the executions of one exploration did, summed."""

    deliveries: int = 0
    duplicates: int = 0
    events: int = 0


def _choices(world: World, fired: set[str], duplicated: set[str], duplicates: bool) -> list[Choice]:
    now = world.clock.now()
    queued = sorted(world.store.queued(), key=lambda m: m.id)
    out: list[Choice] = []
    for message in queued:
        if message.available_at > now:
            continue
        out.append(Choice(DELIVER + message.id, "deliver", message.id))
        if duplicates and message.id not in duplicated:
            out.append(Choice(TWICE + message.id, "deliver", message.id, twice=True))
    out.extend(
        Choice(f"event {e.name}", "event", e.name) for e in world.events if e.name not in fired
    )
    later = [m.available_at for m in queued if m.available_at > now]
    if later:
        when = min(later)
        out.append(Choice(f"advance to t+{when - world.start:g}", "advance", when=when))
    return out


def _deliver(world: World, choice: Choice, tally: Tally) -> None:
    app = world.app
    leased = app.store.lease(
        worker="explorer", limit=1, lease_seconds=app.lease_seconds, ids=[choice.target]
    )
    if not leased:
        raise RuntimeError(f"message {choice.target} is due but could not be leased")
    delivery = leased[0]
    tally.deliveries += 1
    if choice.twice:
        copy = attrs.evolve(delivery, deliveries=delivery.deliveries + 1)
        world._racing.arm(lambda: app.engine.handle(copy))
        tally.deliveries += 1
        tally.duplicates += 1
    app.engine.handle(delivery)
    world._racing.race()  # when the original wrote nothing, its copy runs after it


def execute(
    scenario: Scenario, chooser: Chooser, *, duplicates: bool, max_depth: int, tally: Tally
) -> _Ran:
    """Run one schedule as *chooser* picks it.  Raises :class:`ScheduleFailure`."""
    labels: list[str] = []
    world = scenario()
    fired: set[str] = set()
    duplicated: set[str] = set()
    events = {e.name: e for e in world.events}

    def fail(reason: str, cause: BaseException | None = None) -> ScheduleFailure:
        return ScheduleFailure(labels, reason, violations=world.invariants.violations, cause=cause)

    if world.invariants.violations:
        raise fail("the scenario's setup broke an invariant")
    while choices := _choices(world, fired, duplicated, duplicates):
        if len(labels) >= max_depth:
            raise fail(f"longer than max_depth={max_depth} choices (a livelock?)")
        index = chooser.choose(len(labels), choices)
        if index is None:
            return _Ran("redundant", world, len(labels))
        choice = choices[index]
        labels.append(choice.label)
        world.store.footprint()  # note only what this choice touches
        try:
            if choice.kind == "deliver":
                if choice.twice:
                    duplicated.add(choice.target)
                _deliver(world, choice, tally)
            elif choice.kind == "event":
                fired.add(choice.target)
                tally.events += 1
                events[choice.target].fire()
            else:
                world.clock.advance_to(choice.when)
        except Exception as exc:
            raise fail(f"{choice.label} raised", exc) from exc
        footprint = world.store.footprint()
        world.invariants.at_quiescence(world.records(), world.store.queued(), healed=False)
        if world.invariants.violations:
            raise fail(f"an invariant broke at {choice.label}")
        if chooser.touched(
            len(labels) - 1,
            footprint if choice.kind == "deliver" else _EVERYTHING,
            world.fingerprint,
        ):
            return _Ran("converged", world, len(labels))
    world.invariants.at_quiescence(world.records(), world.store.queued(), healed=True)
    if world.invariants.violations:
        raise fail("not healed at the end")
    outcome = None
    if world.check is not None:
        try:
            outcome = world.check()
        except Exception as exc:
            raise fail("the scenario's check failed", exc) from exc
    return _Ran("finished", world, len(labels), outcome)


class _Replay(Chooser):
    def __init__(self, schedule: Sequence[str]) -> None:
        self.schedule = schedule

    def choose(self, depth: int, choices: Sequence[Choice]) -> int:
        if depth >= len(self.schedule):
            return 0
        for index, choice in enumerate(choices):
            if choice.label == self.schedule[depth]:
                return index
        raise NondeterministicScenario(
            f"choice {depth + 1} {self.schedule[depth]!r} is not offered: "
            f"{[c.label for c in choices]}"
        )


def run_schedule(scenario: Scenario, schedule: Sequence[str], *, duplicates: bool = True) -> World:
    """Replay *schedule* (the labels a :class:`ScheduleFailure` names) on a fresh world
    from *scenario*, with every check :func:`explore` makes, and return the world.
    Past the end of *schedule* the first choice is taken at each point; a label not
    offered at its point raises :class:`NondeterministicScenario`."""
    return execute(
        scenario, _Replay(schedule), duplicates=duplicates, max_depth=10_000, tally=Tally()
    ).world
