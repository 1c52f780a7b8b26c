"""Exhaustive small schedules: every order in which a small scenario can unfold.

Where :mod:`stepkernel.testing.simulation` *samples* schedules with seeds, this module
*enumerates* them: for a scenario small enough, every delivery order of every message,
each message optionally delivered twice, every moment at which each outside event may
happen and at which time may pass -- and it says so, or raises.

Theory of operation
-------------------
A *scenario* is a function that builds a fresh :class:`World` (an :class:`App` on
``CheckedStore(InMemoryWorkflowStore(FakeClock))``), submits its roots, declares its
*outside events* with :meth:`World.event` ("complete the outbound action now",
"complete an unknown id") and sets its final check, :attr:`World.check`.

A *schedule* is a sequence of choices.  At each point the choices are, in this order:

``deliver <id>``
    hand one due message (``available_at <= now``; by id, so the order is stable) to a
    worker, which handles it and commits its outcome.
``deliver twice <id>``
    the same, delivered a second time -- at most once per message id and schedule.  The
    copy goes to a second worker that leased the message too and handles it completely
    (loads the same state, runs the same user code, commits) at the moment the first
    worker is about to write its outcome; the first worker's write then meets the new
    state (a version conflict makes it decide again) and must change nothing more.
    This is the at-least-once race in its sharpest form: user code ran twice on the
    same state, its outcome must be applied once.
``event <name>``
    fire an outside event that has not fired yet.
``advance to t+<s>``
    move the :class:`FakeClock` to the earliest ``available_at`` still in the future.
    Offered whenever such a message is queued, whether or not others are due now: a
    worker may lag behind its timers.  It is the only choice once nothing is due and
    every event has fired.

A schedule ends when nothing is queued and every event has fired.  Then the whole
state must be healed (:meth:`Invariants.at_quiescence` with ``healed=True``: every
action finished, nothing queued), no invariant may have been broken by any commit
(:class:`CheckedStore` checks each one), and the scenario's own check must pass.  After
every choice, nothing in flight may lack a wake-up (``at_quiescence(healed=False)``).

:func:`explore` is a stateless depth-first search: each schedule is re-executed from
scratch (a fresh world from the scenario), taking the recorded choices of the previous
schedule up to its deepest point with an untried alternative, then that alternative,
then the first choice everywhere after.  Nothing is copied or restored, so what is
checked is exactly what the engine does.  Scenarios must therefore be deterministic
(sequential ids, a seeded ``rng``, no wall clock): a replayed choice whose label differs
raises :class:`NondeterministicScenario`.

There is no partial-order reduction: every interleaving is run, including those that
only reorder unrelated work.  Keep scenarios small -- a handful of messages -- and let
*limit* say how small: :func:`explore` raises :class:`ScheduleLimitExceeded` rather than
return after a partial search, so a passing exploration is always exhaustive.

A failing schedule raises :class:`ScheduleFailure` naming its choices;
:func:`run_schedule` replays exactly those choices for a debugger.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import attrs
from attrs import frozen

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, Record, RecordKey
from stepkernel.ports.store import ActionQuery, Commit, Delivery, WorkflowStore
from stepkernel.runtime.app import App
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.registry import Registry
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.invariants import CheckedStore, Invariants, Violation

Check = Callable[[], "str | None"]
"""A scenario's final check: asserts, and may return an outcome label (counted in
:attr:`Exploration.outcomes`, so a test can require that every outcome was reached)."""


@frozen
class OutsideEvent:
    """Something that happens from outside at a moment the schedule chooses."""

    name: str
    fire: Callable[[], object]


class _RacingStore(WorkflowStore):
    """Delegates to *inner*; when armed, runs the armed handler (the duplicate's worker)
    just before the next write (``commit`` or ``ack``) and disarms."""

    def __init__(self, inner: WorkflowStore) -> None:
        self.inner = inner
        self.clock = inner.clock
        self._armed: Callable[[], object] | None = None

    def arm(self, racer: Callable[[], object]) -> None:
        self._armed = racer

    def race(self) -> None:
        racer, self._armed = self._armed, None
        if racer is not None:
            racer()

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        return self.inner.load(keys)

    def commit(self, commit: Commit) -> None:
        self.race()
        self.inner.commit(commit)

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        return self.inner.lease(worker=worker, limit=limit, lease_seconds=lease_seconds, ids=ids)

    def ack(self, ids: Iterable[str]) -> None:
        self.race()
        self.inner.ack(ids)

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        self.inner.release(ids, worker=worker)

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        self.inner.extend(ids, worker=worker, lease_seconds=lease_seconds)

    def next_due(self) -> float | None:
        return self.inner.next_due()

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        return self.inner.queued(action_id=action_id)

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        return self.inner.find_actions(query)

    def now(self) -> float:
        return self.inner.now()

    def close(self) -> None:
        self.inner.close()


class World:
    """One fresh run of a scenario: an :class:`App` on a checked in-memory store with a
    :class:`FakeClock`, the scenario's outside events and its final check.

    ``app`` is what the scenario submits to and completes through; ``store`` is the
    in-memory store underneath (a backdoor: ``all_records()``, ``queued()``);
    ``invariants`` collects every violation found.  Ids are sequential (``r1``,
    ``r2``...) and retry jitter is seeded, so a world replays exactly.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 60.0,
        start: float = 1_700_000_000.0,
    ) -> None:
        self.clock = FakeClock(start)
        self.start = start
        self.store = InMemoryWorkflowStore(clock=self.clock)
        self.invariants = Invariants()
        self._racing = _RacingStore(CheckedStore(self.store, self.invariants))
        counter = itertools.count(1)
        self.app = App(
            registry,
            self._racing,
            retry=retry,
            new_id=lambda: f"r{next(counter)}",
            rng=random.Random(0),
            lease_seconds=lease_seconds,
        )
        self.events: list[OutsideEvent] = []
        self.check: Check | None = None

    def event(self, name: str, fire: Callable[[], object]) -> None:
        """Declare the outside event *name*: each schedule fires it exactly once, at
        every possible moment.  *fire* may assert (a failure fails the schedule)."""
        if any(e.name == name for e in self.events):
            raise ValueError(f"event {name!r} is declared twice")
        self.events.append(OutsideEvent(name, fire))

    def records(self) -> dict[RecordKey, Record]:
        """Every stored record (a snapshot)."""
        return self.store.all_records()

    def actions(self) -> dict[str, ActionRecord]:
        """Every stored action record by id."""
        return {r.id: r for r in self.records().values() if isinstance(r, ActionRecord)}


Scenario = Callable[[], World]
"""Builds a fresh :class:`World` and submits its roots; called once per schedule."""


@frozen
class Exploration:
    """What :func:`explore` ran: ``schedules`` (complete ones, all of them),
    ``max_depth`` (most choices in one schedule), ``deliveries`` (messages handled,
    copies included), ``duplicates`` (twice-delivered messages), ``events`` (outside
    events fired) and ``outcomes`` (how many schedules ended with each label the
    scenario's check returned)."""

    schedules: int
    max_depth: int
    deliveries: int
    duplicates: int
    events: int
    outcomes: Mapping[str, int]

    def __str__(self) -> str:
        seen = ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.schedules} schedules (max depth {self.max_depth}, {self.deliveries} "
            f"deliveries, {self.duplicates} duplicated, {self.events} events)"
            + (f"; outcomes {seen}" if seen else "")
        )


class ScheduleLimitExceeded(AssertionError):
    """The scenario has more than ``limit`` schedules: the search stopped, so nothing
    was proven about the rest.  Raise the limit or shrink the scenario."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"more than {limit} schedules: the exploration would not be exhaustive "
            "(raise limit= or shrink the scenario)"
        )


class ScheduleFailure(AssertionError):
    """One schedule broke an invariant, its scenario's check, or raised.

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
    """Replaying a recorded choice found another one at that point: the scenario does
    not behave the same way twice (wall clock, random ids, set order...)."""


@frozen
class _Choice:
    label: str
    kind: str  # "deliver", "event" or "advance"
    target: str = ""
    twice: bool = False
    when: float = 0.0


@frozen
class _Taken:
    index: int
    count: int
    label: str


_UNKNOWN = "\0"
"""The label of a choice not yet offered (the next alternative to try)."""

Picker = Callable[[int, Sequence[_Choice]], int]


@attrs.define
class _Tally:
    deliveries: int = 0
    duplicates: int = 0
    events: int = 0


def _choices(
    world: World, fired: set[str], duplicated: set[str], duplicates: bool
) -> list[_Choice]:
    now = world.clock.now()
    queued = sorted(world.store.queued(), key=lambda m: m.id)
    out: list[_Choice] = []
    for message in queued:
        if message.available_at > now:
            continue
        out.append(_Choice(f"deliver {message.id}", "deliver", message.id))
        if duplicates and message.id not in duplicated:
            out.append(_Choice(f"deliver twice {message.id}", "deliver", message.id, twice=True))
    out.extend(
        _Choice(f"event {e.name}", "event", e.name) for e in world.events if e.name not in fired
    )
    later = [m.available_at for m in queued if m.available_at > now]
    if later:
        when = min(later)
        out.append(_Choice(f"advance to t+{when - world.start:g}", "advance", when=when))
    return out


def _deliver(world: World, choice: _Choice, tally: _Tally) -> None:
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
    world._racing.race()  # the original wrote nothing: the copy runs after it


def _execute(
    scenario: Scenario, pick: Picker, *, duplicates: bool, max_depth: int, tally: _Tally
) -> tuple[World, list[_Taken], str | None]:
    """Run one schedule, choosing with *pick*; returns the world, the choices taken and
    the check's outcome label.  Raises :class:`ScheduleFailure`."""
    taken: list[_Taken] = []
    labels: list[str] = []
    world = scenario()
    fired: set[str] = set()
    duplicated: set[str] = set()
    events = {e.name: e for e in world.events}

    def fail(reason: str, cause: BaseException | None = None) -> ScheduleFailure:
        return ScheduleFailure(labels, reason, violations=world.invariants.violations, cause=cause)

    if world.invariants.violations:
        raise fail("the scenario's setup broke an invariant")
    while True:
        choices = _choices(world, fired, duplicated, duplicates)
        if not choices:
            break
        if len(taken) >= max_depth:
            raise fail(f"longer than max_depth={max_depth} choices (a livelock?)")
        index = pick(len(taken), choices)
        choice = choices[index]
        taken.append(_Taken(index, len(choices), choice.label))
        labels.append(choice.label)
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
        except NondeterministicScenario:
            raise
        except Exception as exc:
            raise fail(f"{choice.label} raised", exc) from exc
        world.invariants.at_quiescence(world.records(), world.store.queued(), healed=False)
        if world.invariants.violations:
            raise fail(f"an invariant broke at {choice.label}")
    world.invariants.at_quiescence(world.records(), world.store.queued(), healed=True)
    if world.invariants.violations:
        raise fail("not healed at the end")
    outcome = None
    if world.check is not None:
        try:
            outcome = world.check()
        except Exception as exc:
            raise fail("the scenario's check failed", exc) from exc
    return world, taken, outcome


def explore(
    scenario: Scenario,
    *,
    duplicates: bool = True,
    limit: int = 20_000,
    max_depth: int = 200,
) -> Exploration:
    """Run *scenario* under every schedule (see the module docstring) and return what
    was covered.

    *duplicates* offers each due message a second delivery (once per message id and
    schedule).  Raises :class:`ScheduleFailure` at the first failing schedule,
    :class:`ScheduleLimitExceeded` when there are more than *limit* schedules,
    and :class:`NondeterministicScenario` when a replayed choice differs.
    """
    if limit < 1 or max_depth < 1:
        raise ValueError("limit and max_depth must be >= 1")
    prefix: list[_Taken] = []
    tally = _Tally()
    outcomes: Counter[str] = Counter()
    schedules = 0
    deepest = 0

    def pick(depth: int, choices: Sequence[_Choice]) -> int:
        if depth >= len(prefix):
            return 0
        recorded = prefix[depth]
        if recorded.count != len(choices) or recorded.label not in (
            _UNKNOWN,
            choices[recorded.index].label,
        ):
            raise NondeterministicScenario(
                f"at choice {depth + 1}, replaying {recorded.label!r} of {recorded.count} "
                f"found {[c.label for c in choices]}"
            )
        return recorded.index

    while True:
        if schedules == limit:
            raise ScheduleLimitExceeded(limit)
        _world, taken, outcome = _execute(
            scenario, pick, duplicates=duplicates, max_depth=max_depth, tally=tally
        )
        schedules += 1
        deepest = max(deepest, len(taken))
        if outcome is not None:
            outcomes[outcome] += 1
        depth = len(taken) - 1
        while depth >= 0 and taken[depth].index + 1 >= taken[depth].count:
            depth -= 1
        if depth < 0:
            break
        last = taken[depth]
        # the next alternative at that depth; its label is checked once offered again
        prefix = [*taken[:depth], _Taken(last.index + 1, last.count, _UNKNOWN)]
    return Exploration(
        schedules=schedules,
        max_depth=deepest,
        deliveries=tally.deliveries,
        duplicates=tally.duplicates,
        events=tally.events,
        outcomes=dict(outcomes),
    )


def run_schedule(scenario: Scenario, schedule: Sequence[str], *, duplicates: bool = True) -> World:
    """Replay *schedule* (the labels a :class:`ScheduleFailure` names) on a fresh world
    from *scenario*, with every check :func:`explore` makes, and return the world.
    Choices left over after the schedule are taken first-first; a label not offered at
    its point raises :class:`NondeterministicScenario`."""

    def pick(depth: int, choices: Sequence[_Choice]) -> int:
        if depth >= len(schedule):
            return 0
        for index, choice in enumerate(choices):
            if choice.label == schedule[depth]:
                return index
        raise NondeterministicScenario(
            f"choice {depth + 1} {schedule[depth]!r} is not offered: {[c.label for c in choices]}"
        )

    world, _taken, _outcome = _execute(
        scenario, pick, duplicates=duplicates, max_depth=10_000, tally=_Tally()
    )
    return world


__all__ = [
    "Check",
    "Exploration",
    "NondeterministicScenario",
    "OutsideEvent",
    "Scenario",
    "ScheduleFailure",
    "ScheduleLimitExceeded",
    "World",
    "explore",
    "run_schedule",
]
