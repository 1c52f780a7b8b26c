"""Exhaustive small schedules of the canonical scenarios (issue 3).

Each scenario is explored under every delivery order, each message optionally delivered
twice, every moment for its outside events and for time to pass
(:mod:`stepkernel.testing.schedules`): no invariant may break in any schedule, every
schedule must end healed, and each scenario's own check states what must hold however
the schedule went.  Checks return an outcome label, and each test requires every
outcome its race allows, so an exploration that quietly stopped reaching a branch
fails.  ``pytest -rP`` prints how many schedules each scenario ran.

Six scenarios run every schedule (``reduce=False``).  The timed-out parent has about
2.8 million (5,808 orders, times the 2**k ways to duplicate each order's k deliveries),
so it runs reduced: one order per class of commuting deliveries, and duplicates followed
only until they leave the state the single delivery left.  The reduction is checked
against the full search on every scenario (on the timed-out parent without
duplicates).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from planted_bugs import planted

from stepkernel import (
    ActionFinishedError,
    ActionNotFoundError,
    ActionStatus,
    Registry,
)
from stepkernel.domain.records import ACHIEVEMENT, AchievementRecord
from stepkernel.testing.schedules import (
    Exploration,
    NondeterministicScenario,
    Scenario,
    ScheduleFailure,
    ScheduleLimitExceeded,
    World,
    explore,
    run_schedule,
)


class Box:
    """The actor of every scenario (loaded back from its id)."""

    def __init__(self, id: int) -> None:
        self.id = id


def _registry() -> Registry:
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=lambda k: Box(int(k)))
    return reg


def _lane(name: str) -> Callable[..., str]:
    return lambda *_arguments: name


def _nothing(step: Any, box: Box, *arguments: Any) -> None:
    """A step that fans out nothing."""


def _id(value: str | None) -> str:
    assert value is not None
    return value


def _explored(name: str, scenario: Scenario, *, reduce: bool = False) -> Exploration:
    stats = explore(scenario, reduce=reduce)
    print(f"{name}{' (reduced)' if reduce else ''}: {stats}")
    return stats


# -- the canonical scenarios -------------------------------------------------------------------


def two_children_and_a_wait() -> World:
    """``deploy``: step 0 fans out ``boot``, ``ping`` and a 5 s wait; step 1 follows."""
    runs: list[str] = []
    reg = _registry()
    reg.action(Box, "boot", steps=[lambda step, box: runs.append("boot")])
    reg.action(Box, "ping", steps=[lambda step, box: runs.append("ping")])

    def fan(step: Any, box: Box) -> None:
        step.do("boot")
        step.do("ping")
        step.wait(5)

    reg.action(Box, "deploy", steps=[fan, lambda step, box: runs.append("next")])
    world = World(reg)
    root = _id(world.app.invoke_later(Box(1), "deploy").id)

    def check() -> str:
        final = world.app.get(root)
        assert final.status is ActionStatus.SUCCEEDED
        assert final.started_at is not None
        assert final.finished_at is not None
        assert final.finished_at >= final.started_at + 5
        assert {a.status for a in world.app.tree(root).walk()} == {ActionStatus.SUCCEEDED}
        first = world.actions()[root].steps[0]
        assert len(first.dependencies) == 3
        assert first.settled == frozenset(first.dependencies)
        assert runs.index("next") > max(runs.index("boot"), runs.index("ping"))
        return "succeeded"

    world.check = check
    return world


def three_contenders() -> World:
    """``parent`` fans out ``work(1..3)`` in lane ``L``, which an outbound ``hold`` may
    still hold; the holder is completed from outside at any moment."""
    ran: list[int] = []
    reg = _registry()
    reg.action(Box, "hold", outbound=True, concurrency_key=_lane("L"), steps=[_nothing])
    reg.action(Box, "work", concurrency_key=_lane("L"), steps=[lambda step, box, n: ran.append(n)])

    def fan(step: Any, box: Box) -> None:
        for n in (1, 2, 3):
            step.do("work", n)

    reg.action(Box, "parent", steps=[fan])
    world = World(reg)
    holder = _id(world.app.invoke_later(Box(1), "hold").id)
    parent = _id(world.app.invoke_later(Box(2), "parent").id)
    world.event("complete holder", lambda: world.app.complete(holder))

    def check() -> str:
        assert world.app.get(parent).status is ActionStatus.SUCCEEDED
        assert world.app.get(holder).status is ActionStatus.SUCCEEDED
        contenders = {n: world.app.get(f"{parent}.0.{n - 1}") for n in (1, 2, 3)}
        assert contenders[3].status is ActionStatus.SUCCEEDED
        for n, action in contenders.items():
            assert action.status in (ActionStatus.SUCCEEDED, ActionStatus.SUPERSEDED)
            assert (n in ran) == (action.status is ActionStatus.SUCCEEDED)
        return "ran " + ",".join(str(n) for n in sorted(set(ran)))

    world.check = check
    return world


def completion_racing_timeout() -> World:
    """``provision``: outbound, 5 s timeout, an after callback for both endings; the
    completion arrives from outside at any moment."""
    called: list[ActionStatus] = []
    answers: list[str] = []
    reg = _registry()
    provision = reg.action(Box, "provision", outbound=True, timeout=5, steps=[_nothing])
    provision.after("succeeded", "timed_out")(lambda action, box: called.append(action.status))
    world = World(reg)
    action = _id(world.app.invoke_later(Box(1), "provision").id)

    def complete() -> None:
        before = world.records()
        try:
            answers.append(world.app.complete(action, payload={"ip": "10.0.0.1"}).outcome)
        except ActionFinishedError:
            answers.append("refused")
            assert world.records() == before

    world.event("complete", complete)

    def check() -> str:
        final = world.app.get(action)
        assert final.status in (ActionStatus.SUCCEEDED, ActionStatus.TIMED_OUT)
        assert final.callbacks == "ok"
        assert set(called) == {final.status}
        [answer] = answers
        if final.status is ActionStatus.SUCCEEDED:
            assert answer in ("kept", "applied")
            assert final.output == {"ip": "10.0.0.1"}
        else:
            assert final.error is not None
            assert final.error.type == "Timeout"
            assert final.started_at is not None
            assert final.finished_at is not None
            assert final.finished_at >= final.started_at + 5
            assert final.output is None
        return f"{final.status.value} ({answer})"

    world.check = check
    return world


def early_duplicate_unknown_completion() -> World:
    """``provision``: outbound, its step waits 10 s; the same completion arrives twice
    and one for an unknown id, each at any moment."""
    answers: list[str] = []
    reg = _registry()
    reg.action(Box, "provision", outbound=True, steps=[lambda step, box: step.wait(10)])
    world = World(reg)
    action = _id(world.app.invoke_later(Box(1), "provision").id)

    def complete() -> None:
        before = (world.records(), world.store.queued())
        outcome = world.app.complete(action, payload={"ip": "10.0.0.1"}).outcome
        if answers:
            assert outcome == "duplicate"
            assert (world.records(), world.store.queued()) == before
        answers.append(outcome)

    def unknown() -> None:
        before = (world.records(), world.store.queued())
        with pytest.raises(ActionNotFoundError):
            world.app.complete("r404", payload={"ip": "10.0.0.1"})
        assert (world.records(), world.store.queued()) == before

    world.event("complete", complete)
    world.event("complete again", complete)
    world.event("complete unknown", unknown)

    def check() -> str:
        final = world.app.get(action)
        assert final.status is ActionStatus.SUCCEEDED
        assert final.output == {"ip": "10.0.0.1"}
        assert final.started_at is not None
        assert final.finished_at is not None
        assert final.finished_at >= final.started_at + 10
        assert answers[1] == "duplicate"
        return answers[0]

    world.check = check
    return world


def checksum_reuse_then_superseding() -> World:
    """``sync("v1")`` queues behind the outbound holder of lane ``sync``; ``parent`` fans
    out the identical ``sync("v1")``; ``sync("v2")`` is submitted from outside and the
    holder completed, each at any moment."""
    ran: list[str] = []
    reg = _registry()
    reg.action(Box, "hold", outbound=True, concurrency_key=_lane("sync"), steps=[_nothing])
    reg.action(
        Box,
        "sync",
        checksum=lambda box, v: v,
        checksum_key=lambda box, v: "scope",
        concurrency_key=_lane("sync"),
        steps=[lambda step, box, v: ran.append(step.action_id)],
    )
    reg.action(Box, "parent", steps=[lambda step, box: step.do("sync", "v1")])
    world = World(reg)
    holder = _id(world.app.invoke_later(Box(1), "hold").id)
    first = _id(world.app.invoke_later(Box(2), "sync", "v1").id)
    parent = _id(world.app.invoke_later(Box(3), "parent").id)
    world.event("complete holder", lambda: world.app.complete(holder))
    world.event("submit v2", lambda: world.app.invoke_later(Box(4), "sync", "v2"))

    def check() -> str:
        actions = world.actions()
        assert actions[holder].status is ActionStatus.SUCCEEDED
        assert actions[parent].status is ActionStatus.SUCCEEDED
        syncs = {i: r for i, r in actions.items() if r.name == "sync"}
        for sync_id, record in syncs.items():
            assert record.status in (ActionStatus.SUCCEEDED, ActionStatus.SUPERSEDED)
            assert (sync_id in ran) == (record.status is ActionStatus.SUCCEEDED)
        scope = world.records()[(ACHIEVEMENT, "scope")]
        assert isinstance(scope, AchievementRecord)
        assert syncs[scope.action_id].status is ActionStatus.SUCCEEDED
        assert syncs[scope.action_id].checksum == scope.checksum
        links = dict(actions[parent].steps[0].links)
        if f"{parent}.0.0" in syncs:
            served = "its own child"
        elif first in links.values():
            served = "joined v1"
        else:
            served = "achieved"
        return f"v1 {actions[first].status.value}, parent {served}"

    world.check = check
    return world


def two_lane_deadlock() -> World:
    """``a`` holds L1 and fans out into L2; ``b`` holds L2 and fans out into L1."""
    reg = _registry()
    reg.action(Box, "a_child", concurrency_key=_lane("L2"), steps=[_nothing])
    reg.action(Box, "b_child", concurrency_key=_lane("L1"), steps=[_nothing])
    reg.action(Box, "a", concurrency_key=_lane("L1"), steps=[lambda s, b: s.do("a_child")])
    reg.action(Box, "b", concurrency_key=_lane("L2"), steps=[lambda s, b: s.do("b_child")])
    world = World(reg)
    roots = [_id(world.app.invoke_later(Box(1), name).id) for name in ("a", "b")]

    def check() -> str:
        actions = world.actions()
        deadlocked = [r for r in actions.values() if r.status is ActionStatus.DEADLOCKED]
        assert len(deadlocked) == 1
        [cycle] = deadlocked
        assert cycle.parent is not None
        failed = cycle.parent.action_id
        assert actions[failed].status is ActionStatus.FAILED
        assert [actions[r].status for r in roots if r != failed] == [ActionStatus.SUCCEEDED]
        return f"{actions[failed].name} failed"

    world.check = check
    return world


def timed_out_parent() -> World:
    """``parent`` (5 s timeout) fans out ``quick`` (a 5 s wait: it races the timeout)
    and ``middle``, whose child ``provision`` is outbound and never completed."""
    reg = _registry()
    reg.action(Box, "quick", steps=[lambda step, box: step.wait(5)])
    reg.action(Box, "provision", outbound=True, steps=[_nothing])
    reg.action(Box, "middle", steps=[lambda step, box: step.do("provision")])

    def fan(step: Any, box: Box) -> None:
        step.do("quick")
        step.do("middle")

    reg.action(Box, "parent", timeout=5, steps=[fan])
    world = World(reg)
    parent = _id(world.app.invoke_later(Box(1), "parent").id)

    def check() -> str:
        actions = world.actions()
        final = actions[parent]
        assert final.status is ActionStatus.TIMED_OUT
        assert final.started_at is not None
        assert final.finished_at is not None
        assert final.finished_at >= final.started_at + 5
        statuses = {r.name: r.status for r in actions.values() if r.id != parent}
        assert statuses.get("quick", ActionStatus.CANCELLED) in (
            ActionStatus.SUCCEEDED,
            ActionStatus.CANCELLED,
        )
        for name in ("middle", "provision"):
            assert statuses.get(name, ActionStatus.CANCELLED) is ActionStatus.CANCELLED
        return ", ".join(f"{n} {s.value}" for n, s in sorted(statuses.items())) or "no child"

    world.check = check
    return world


def test_one_step_with_two_children_and_a_wait() -> None:
    """A step fanning out two children and a 5 s wait completes only when all three
    settled, whatever their order: the next step runs after both children, the action
    finishes no earlier than the wait, and every child succeeded."""
    stats = _explored("two children and a wait", two_children_and_a_wait)
    assert stats.outcomes == {"succeeded": stats.schedules}


def test_three_contenders_in_one_lane_from_one_parent_step() -> None:
    """Three actions fanned out in lane ``L`` by one step, with an outbound holder of
    ``L`` completed at any moment: the parent always succeeds, at most one action
    performs in ``L`` at a time (checked on every commit), the newest contender always
    runs, and a superseded contender never ran."""
    stats = _explored("three contenders in one lane", three_contenders)
    # Still held when they arrive: 1 and 2 are superseded and only 3 runs; released
    # before: 1 starts at once, 2 is superseded by 3, which runs after 1.
    assert set(stats.outcomes) == {"ran 3", "ran 1,3"}


def test_outbound_completion_racing_a_timeout() -> None:
    """An outbound action with a 5 s timeout, completed from outside at any moment, ends
    either succeeded with the completion's payload or timed out no earlier than its
    deadline -- never both, never neither -- and its after callback runs for that one
    status; a completion arriving after the timeout is refused and changes nothing."""
    stats = _explored("completion racing a timeout", completion_racing_timeout)
    assert set(stats.outcomes) == {
        "succeeded (kept)",  # early: kept, applied when the step is done
        "succeeded (applied)",  # the action was waiting for it
        "timed_out (kept)",  # kept, but the deadline came before the step ran
        "timed_out (refused)",  # too late
    }


def test_early_duplicate_and_unknown_external_completion() -> None:
    """The same completion twice and one for an unknown id, each at any moment: the
    unknown one raises ActionNotFoundError and changes nothing, the second identical one
    is a ``duplicate`` that changes nothing, and the first is kept while the step waits
    and applied when it is done (or applied at once when the action already waits)."""
    stats = _explored("early, duplicate and unknown completion", early_duplicate_unknown_completion)
    assert set(stats.outcomes) == {"kept", "applied"}


def test_checksum_reuse_followed_by_superseding() -> None:
    """A parent's ``sync("v1")`` reuses the identical one queued in flight, which
    ``sync("v2")`` may then supersede: every root finishes, the parent always succeeds
    (its wait follows the superseding action), superseded actions never ran and every
    other one ran, and the achievement names a succeeded action with its checksum."""
    stats = _explored("checksum reuse then superseding", checksum_reuse_then_superseding)
    assert {
        "v1 superseded, parent joined v1",  # reused, then superseded: the wait moved
        "v1 succeeded, parent joined v1",
        "v1 succeeded, parent achieved",
        "v1 superseded, parent its own child",
    } <= set(stats.outcomes)


def test_two_lane_deadlock_cycle() -> None:
    """Two roots holding L1 and L2 fan out into each other's lane: in every order exactly
    one child ends deadlocked, its root fails, the other root succeeds, and nothing is
    left queued or in flight."""
    stats = _explored("two-lane deadlock cycle", two_lane_deadlock)
    assert set(stats.outcomes) == {"a failed", "b failed"}


def test_timed_out_parent_with_children_in_flight() -> None:
    """A parent times out with a child racing its deadline and a grandchild waiting
    forever: the parent always ends timed out, every descendant still in flight is
    cancelled (``quick`` succeeded if it settled first), nothing is stranded or queued."""
    stats = _explored("timed-out parent with children in flight", timed_out_parent, reduce=True)
    assert {
        "middle cancelled, provision cancelled, quick cancelled",
        "middle cancelled, provision cancelled, quick succeeded",
    } <= set(stats.outcomes)


_SMALL = [
    two_children_and_a_wait,
    three_contenders,
    completion_racing_timeout,
    early_duplicate_unknown_completion,
    checksum_reuse_then_superseding,
    two_lane_deadlock,
]


@pytest.mark.parametrize(
    ("scenario", "duplicates"),
    [*((s, True) for s in _SMALL), (timed_out_parent, False)],
    ids=[*(s.__name__ for s in _SMALL), "timed_out_parent-no-duplicates"],
)
def test_reduction_reaches_every_final_state(scenario: Scenario, duplicates: bool) -> None:
    """The reduced exploration ends in exactly the final states (and outcomes) the full
    one ends in: the schedules it skips could not have reached anything else."""
    full = explore(scenario, duplicates=duplicates, reduce=False)
    reduced = explore(scenario, duplicates=duplicates)
    assert reduced.final_states == full.final_states
    assert set(reduced.outcomes) == set(full.outcomes)
    assert reduced.schedules < full.schedules


@pytest.mark.parametrize("scenario", _SMALL, ids=[s.__name__ for s in _SMALL])
def test_duplicates_change_no_final_state(scenario: Scenario) -> None:
    """Delivering messages twice, in every combination, ends in exactly the final states
    (records, versions and digest chains) of the schedules without duplicates."""
    once = explore(scenario, duplicates=False, reduce=False)
    twice = explore(scenario, reduce=False)
    assert twice.final_states == once.final_states
    assert twice.duplicates > 0


@pytest.mark.parametrize(
    ("bug", "scenario"),
    [
        ("count_settlements", two_children_and_a_wait),
        ("completion_twice", early_duplicate_unknown_completion),
        ("keep_lane_on_timeout", completion_racing_timeout),
        ("reuse_superseded", checksum_reuse_then_superseding),
    ],
)
def test_planted_bug_is_caught(bug: str, scenario: Scenario) -> None:
    """A planted bug that a scenario exercises makes some schedule of it fail (the
    other planted bugs need crashes, retries or two outbound actions of one actor)."""
    with planted(bug), pytest.raises(ScheduleFailure):
        explore(scenario, reduce=False)


# -- the explorer itself ---------------------------------------------------------------------


def _fan_out(*, wait: bool = False, noop_event: bool = False) -> Scenario:
    """A root whose one step fans out ``a`` and ``b`` (and a 5 s wait)."""

    def scenario() -> World:
        reg = _registry()
        reg.action(Box, "a", steps=[_nothing])
        reg.action(Box, "b", steps=[_nothing])

        def fan(step: Any, box: Box) -> None:
            step.do("a")
            step.do("b")
            if wait:
                step.wait(5)

        reg.action(Box, "root", steps=[fan])
        world = World(reg)
        world.app.invoke_later(Box(1), "root")
        if noop_event:
            world.event("nothing", lambda: None)
        return world

    return scenario


@pytest.mark.parametrize(
    ("wait", "noop_event", "duplicates", "count"),
    [
        # run root first, then a and b in either order
        (False, False, False, 2),
        # ... each of the three messages delivered once or twice: 2 * 2**3
        (False, False, True, 16),
        # ... and a no-op event anywhere among the three deliveries: 2 * 4
        (False, True, False, 8),
        # a, b and the 5 s timer after root (time passes, then the timer is
        # delivered): 4! / 2 orders of {a, b, advance, timer}
        (True, False, False, 12),
        # ... each of the four messages delivered once or twice: 12 * 2**4
        (True, False, True, 192),
    ],
)
def test_explore_enumerates_every_schedule(
    wait: bool, noop_event: bool, duplicates: bool, count: int
) -> None:
    """Unreduced, ``explore`` runs exactly every schedule of a scenario whose schedules
    can be counted by hand: every order, every duplicate, every moment for events and
    for time to pass."""
    scenario = _fan_out(wait=wait, noop_event=noop_event)
    stats = explore(scenario, duplicates=duplicates, reduce=False)
    assert (stats.schedules, stats.redundant, stats.converged) == (count, 0, 0)


def _two_roots() -> World:
    reg = _registry()
    reg.action(Box, "x", steps=[_nothing])
    reg.action(Box, "y", steps=[_nothing])
    world = World(reg)
    world.app.invoke_later(Box(1), "x")
    world.app.invoke_later(Box(2), "y")
    return world


def test_reduction_keeps_one_order_of_unrelated_deliveries() -> None:
    """Two unrelated roots' deliveries commute: reduced, one of their two orders is
    finished and the other dropped as redundant; each duplicate that converges to the
    single delivery's state stops there."""
    assert explore(_two_roots, duplicates=False, reduce=False).schedules == 2
    reduced = explore(_two_roots, duplicates=False)
    assert (reduced.schedules, reduced.redundant) == (1, 1)
    assert explore(_two_roots, reduce=False).schedules == 8  # 2 orders * 2**2
    with_duplicates = explore(_two_roots)
    assert with_duplicates.schedules == 1
    assert with_duplicates.converged > 0


def test_explore_raises_when_limit_is_exceeded() -> None:
    """``explore`` raises ScheduleLimitExceeded instead of returning after a partial
    search; a limit equal to the number of executions is enough."""
    with pytest.raises(ScheduleLimitExceeded):
        explore(_fan_out(), reduce=False, limit=15)
    assert explore(_fan_out(), reduce=False, limit=16).schedules == 16


def test_explore_refuses_a_nondeterministic_scenario() -> None:
    """A scenario that offers other choices when a schedule is replayed (here: a root
    id drawn from a counter shared across runs) raises NondeterministicScenario."""
    counter = itertools.count()

    def scenario() -> World:
        reg = _registry()
        reg.action(Box, "x", steps=[_nothing])
        world = World(reg)
        world.app.invoke_later(Box(1), "x", idempotency_key=f"run-{next(counter)}")
        world.app.invoke_later(Box(2), "x", idempotency_key="fixed")
        return world

    with pytest.raises(NondeterministicScenario):
        explore(scenario, duplicates=False, reduce=False)


def test_explore_reports_a_failing_schedule_with_its_choices() -> None:
    """A check failing in one schedule raises ScheduleFailure naming the choices, and
    ``run_schedule`` replays exactly that schedule."""

    def scenario() -> World:
        ran: list[str] = []
        reg = _registry()
        reg.action(Box, "a", steps=[lambda step, box: ran.append("a")])
        reg.action(Box, "b", steps=[lambda step, box: ran.append("b")])
        reg.action(Box, "root", steps=[lambda step, box: [step.do("a"), step.do("b")]])
        world = World(reg)
        world.app.invoke_later(Box(1), "root")

        def check() -> str:
            assert ran == ["a", "b"], "b ran first"
            return "a first"

        world.check = check
        return world

    with pytest.raises(ScheduleFailure) as failure:
        explore(scenario, duplicates=False)
    assert failure.value.schedule == (
        "deliver run:r1:0:0",
        "deliver run:r1.0.1:0:0",
        "deliver run:r1.0.0:0:0",
    )
    assert "b ran first" in str(failure.value)
    with pytest.raises(ScheduleFailure):
        run_schedule(scenario, failure.value.schedule)
    run_schedule(scenario, failure.value.schedule[:1])  # then a before b: passes


def test_duplicate_delivery_runs_user_code_twice() -> None:
    """A message delivered twice runs its step body twice (the second worker read the
    same state), yet its outcome is applied once."""
    runs: list[str] = []

    def scenario() -> World:
        reg = _registry()
        reg.action(Box, "once", steps=[lambda step, box: runs.append(step.action_id)])
        world = World(reg)
        world.app.invoke_later(Box(1), "once")
        return world

    world = run_schedule(scenario, ["deliver twice run:r1:0:0"])
    assert runs == ["r1", "r1"]
    assert world.app.get("r1").status is ActionStatus.SUCCEEDED
    assert world.invariants.violations == []
