"""Exhaustive small schedules: every order in which a small scenario can unfold.

Where :mod:`stepkernel.testing.simulation` *samples* schedules with seeds, this module
*enumerates* them: for a scenario small enough, every delivery order of its messages,
each message optionally delivered twice, every moment for each outside event and for
time to pass -- and it says so, or raises.

Theory of operation
-------------------
A *scenario* is a function that builds a fresh :class:`World` -- an :class:`App` on
``CheckedStore(InMemoryWorkflowStore(FakeClock))``, both subclassed to observe what
each delivery touches and to race duplicates (see below) -- submits its roots,
declares its *outside events* with :meth:`World.event` ("complete the outbound action
now", "complete an unknown id") and sets its final check, :attr:`World.check`.

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
    Offered whenever such a message is queued, whether or not others are due now (a
    worker may lag behind its timers); the only choice once nothing is due and every
    event has fired.

A schedule ends when nothing is queued and every event has fired.  Every commit is
checked as it happens (:class:`CheckedStore`); after every choice nothing in flight may
lack a wake-up (:meth:`Invariants.at_quiescence`, ``healed=False``); at the end the
state must be healed (``healed=True``: every action finished, nothing queued) and the
scenario's check must pass.

:func:`explore` is a stateless depth-first search: each schedule is re-executed from
scratch (a fresh world from the scenario), following the previous schedule up to its
deepest point with an untried alternative, then that alternative, then the first
choice everywhere after.  Nothing is copied or restored, so what is checked is exactly
what the engine does.  Scenarios must be deterministic (sequential ids, seeded
randomness, no wall clock): a replayed point that offers other choices raises
:class:`NondeterministicScenario`.

Reduction
---------
With ``reduce=True`` (the default) the search skips schedules that cannot reach
anything new, in two sound ways; ``reduce=False`` runs every schedule.

*Commuting deliveries* (sleep sets, Godefroid 1996).  Two deliveries that touch
disjoint state commute: in either order they make the same commits and end in the same
state.  After exploring choice ``t`` at a point, each later sibling is explored with
``t`` asleep -- not to be taken again -- for as long as the choices made since commute
with ``t``.  This keeps one schedule per class of equivalent interleavings and still
reaches every state and every final state (a commit skipped at one state is made, on
the very same records, at another).  A path on which every remaining choice is asleep
is dropped unfinished (:attr:`Exploration.redundant`).

Whether two deliveries commute is observed, not declared: while a delivery runs (its
duplicate and the invariant checker's reads included), the in-memory store records
the record keys it read and wrote, the message ids it enqueued, leased or acknowledged,
and any draw from the app's random generator (retry jitter).  Two deliveries commute
when neither wrote anything the other read or wrote.  Outside events and the passing
of time commute with nothing.

*Converged duplicates.*  When ``deliver twice <id>`` leaves exactly the state ``deliver
<id>`` left from the same point (every record's version and digest chain, the queue,
the clock), everything after it was already explored from that state, and the path
stops there (:attr:`Exploration.converged`); the duplicate's own commits were checked.
A duplicate that ends anywhere else is explored to the end like any other choice.

Both reductions see only the store.  State kept *outside* it by user code (a list a
step body appends to) is not observed: a check that depends on the order of such side
effects between unrelated actions, or on how often a body ran after a duplicate, needs
``reduce=False``.

Limits
------
*limit* bounds the executions (finished schedules plus paths stopped early):
:func:`explore` raises :class:`ScheduleLimitExceeded` rather than return after a
partial search, so a passing exploration is always exhaustive.  A failing schedule raises
:class:`ScheduleFailure` naming its choices; :func:`run_schedule` replays exactly those.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import attrs
from attrs import frozen

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, Record, RecordKey, key_of
from stepkernel.ports.store import ActionQuery, Commit, Delivery
from stepkernel.runtime.app import App
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.registry import Registry
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.invariants import CheckedStore, Invariants, Violation

Check = Callable[[], "str | None"]
"""A scenario's final check: asserts, and may return an outcome label (counted in
:attr:`Exploration.outcomes`, so a test can require that every outcome was reached)."""

Place = tuple[str, ...]
"""A piece of state a delivery may touch: ``("record", kind, key)``, ``("message",
id)`` or ``("random",)``."""


@frozen
class _Footprint:
    """What one choice read and wrote; ``everything`` when unknown (commutes with
    nothing)."""

    reads: frozenset[Place] = frozenset()
    writes: frozenset[Place] = frozenset()
    everything: bool = False

    def commutes_with(self, other: _Footprint) -> bool:
        if self.everything or other.everything:
            return False
        return not (self.writes & (other.reads | other.writes) or other.writes & self.reads)


_EVERYTHING = _Footprint(everything=True)


# -- the stores under the app -----------------------------------------------------------------


def _records(keys: Iterable[RecordKey]) -> set[Place]:
    return {("record", *key) for key in keys}


def _messages(ids: Iterable[str]) -> set[Place]:
    return {("message", i) for i in ids}


class _RecordingStore(InMemoryWorkflowStore):
    """The in-memory store, noting what the calls since :meth:`footprint` touched
    (``all_records``, the backdoor, is not noted)."""

    def __init__(self, *, clock: FakeClock) -> None:
        self.reads: set[Place] = set()
        self.writes: set[Place] = set()
        self.everything = False
        super().__init__(clock=clock)

    def footprint(self) -> _Footprint:
        """What was touched since the last call, which starts afresh."""
        done = _Footprint(frozenset(self.reads), frozenset(self.writes), self.everything)
        self.reads, self.writes, self.everything = set(), set(), False
        return done

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        self.reads |= _records(keys)
        return super().load(keys)

    def commit(self, commit: Commit) -> None:
        self.reads |= _records(commit.guards)
        self.writes |= _records(key_of(r) for r in commit.writes)
        self.writes |= _records(t.key for t in commit.deletes)
        self.writes |= _messages(m.id for m in commit.enqueue) | _messages(commit.ack)
        super().commit(commit)

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        self.everything |= ids is None
        self.writes |= _messages(ids or ())
        return super().lease(worker=worker, limit=limit, lease_seconds=lease_seconds, ids=ids)

    def ack(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        self.writes |= _messages(ids)
        super().ack(ids)

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        ids = list(ids)
        self.writes |= _messages(ids)
        super().release(ids, worker=worker)

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        ids = list(ids)
        self.writes |= _messages(ids)
        super().extend(ids, worker=worker, lease_seconds=lease_seconds)

    def next_due(self) -> float | None:
        self.everything = True
        return super().next_due()

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        self.everything = True
        return super().queued(action_id=action_id)

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        self.everything = True
        return super().find_actions(query)


class _RacingStore(CheckedStore):
    """A :class:`CheckedStore` that, when armed, runs the armed handler (a duplicate's
    worker) just before the next write (``commit`` or ``ack``), then disarms."""

    _armed: Callable[[], object] | None = None

    def arm(self, racer: Callable[[], object]) -> None:
        self._armed = racer

    def race(self) -> None:
        racer, self._armed = self._armed, None
        if racer is not None:
            racer()

    def commit(self, commit: Commit) -> None:
        self.race()
        super().commit(commit)

    def ack(self, ids: Iterable[str]) -> None:
        self.race()
        super().ack(ids)


class _RecordingRandom(random.Random):
    """A seeded generator whose draws count as writes to ``("random",)``: the order of
    two deliveries that both draw matters."""

    def __init__(self, seed: int, store: _RecordingStore) -> None:
        super().__init__(seed)
        self._store = store

    def random(self) -> float:
        self._store.writes.add(("random",))
        return super().random()


# -- scenarios ------------------------------------------------------------------------------


@frozen
class OutsideEvent:
    """Something that happens from outside at a moment the schedule chooses."""

    name: str
    fire: Callable[[], object]


class World:
    """One fresh run of a scenario: an :class:`App` on a checked in-memory store with a
    :class:`FakeClock`, the scenario's outside events and its final check.

    ``app`` is what the scenario submits to and completes through; ``store`` is the
    in-memory store underneath (a backdoor: ``all_records()``, ``queued()``);
    ``invariants`` collects every violation found; ``start`` is the clock's start.  Ids
    are sequential (``r1``, ``r2``...) and retry jitter is seeded, so a world replays
    exactly.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 60.0,
        start: float = 1_700_000_000.0,
    ) -> None:
        self.start = start
        self.clock = FakeClock(start)
        self.store = _RecordingStore(clock=self.clock)
        self.invariants = Invariants()
        self._racing = _RacingStore(self.store, self.invariants)
        counter = itertools.count(1)
        self.app = App(
            registry,
            self._racing,
            retry=retry,
            new_id=lambda: f"r{next(counter)}",
            rng=_RecordingRandom(0, self.store),
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

    def fingerprint(self) -> str:
        """A digest of the state: the clock, every record's key, version and digest
        chain, and every queued message."""
        parts = sorted(f"{k[0]}:{k[1]}@{r.version}:{r.digest}" for k, r in self.records().items())
        parts += sorted(repr(m) for m in self.store.queued())
        parts.append(repr(self.clock.now()))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


Scenario = Callable[[], World]
"""Builds a fresh :class:`World` and submits its roots; called once per schedule."""


# -- results and errors ------------------------------------------------------------------------


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


# -- one schedule -------------------------------------------------------------------------------


@frozen
class _Choice:
    label: str
    kind: str  # "deliver", "event" or "advance"
    target: str = ""
    twice: bool = False
    when: float = 0.0


class _Chooser:
    """Picks a choice at each point of one execution (``None``: every choice is asleep,
    drop this path) and learns what the picked one touched."""

    def choose(self, depth: int, choices: Sequence[_Choice]) -> int | None:
        raise NotImplementedError

    def touched(self, depth: int, footprint: _Footprint, state: Callable[[], str]) -> bool:
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


_DELIVER = "deliver "
_TWICE = "deliver twice "


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
        out.append(_Choice(_DELIVER + message.id, "deliver", message.id))
        if duplicates and message.id not in duplicated:
            out.append(_Choice(_TWICE + message.id, "deliver", message.id, twice=True))
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
    world._racing.race()  # when the original wrote nothing, its copy runs after it


def _execute(
    scenario: Scenario, chooser: _Chooser, *, duplicates: bool, max_depth: int, tally: _Tally
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


# -- the search -----------------------------------------------------------------------------------


@attrs.define
class _Point:
    """One point of the current path: the choices offered, the one taken and what it
    touched, the sleep set on arrival and the alternatives already explored here."""

    labels: tuple[str, ...]
    index: int
    asleep: dict[str, _Footprint]
    footprint: _Footprint | None = None
    explored: dict[str, _Footprint] = attrs.field(factory=dict)
    left: dict[str, str] = attrs.field(factory=dict)
    """The fingerprint each single delivery left, for its duplicate to compare."""


class _DepthFirst(_Chooser):
    """The stateless depth-first search over choice sequences, with sleep sets when
    *reduce* (see the module docstring)."""

    def __init__(self, *, reduce: bool) -> None:
        self.reduce = reduce
        self.path: list[_Point] = []

    def choose(self, depth: int, choices: Sequence[_Choice]) -> int | None:
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

    def _asleep_after(self, depth: int) -> dict[str, _Footprint]:
        point = self.path[depth]
        taken = point.footprint
        assert taken is not None
        candidates = {**point.asleep, **point.explored}
        return {label: fp for label, fp in candidates.items() if fp.commutes_with(taken)}

    def touched(self, depth: int, footprint: _Footprint, state: Callable[[], str]) -> bool:
        point = self.path[depth]
        if point.footprint is not None:  # replaying
            return False
        point.footprint = footprint
        if not self.reduce:
            return False
        label = point.labels[point.index]
        if label.startswith(_TWICE):
            single = point.left.get(_DELIVER + label.removeprefix(_TWICE))
            return single is not None and single == state()
        if label.startswith(_DELIVER) and _TWICE + label.removeprefix(_DELIVER) in point.labels:
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
    """Run *scenario* under every schedule (see the module docstring) and return what
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
    tally = _Tally()
    outcomes: Counter[str] = Counter()
    finals: set[str] = set()
    endings: Counter[str] = Counter()
    deepest = 0
    while True:
        if endings.total() == limit:
            raise ScheduleLimitExceeded(limit)
        ran = _execute(scenario, search, duplicates=duplicates, max_depth=max_depth, tally=tally)
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


class _Replay(_Chooser):
    def __init__(self, schedule: Sequence[str]) -> None:
        self.schedule = schedule

    def choose(self, depth: int, choices: Sequence[_Choice]) -> int:
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
    return _execute(
        scenario, _Replay(schedule), duplicates=duplicates, max_depth=10_000, tally=_Tally()
    ).world


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
