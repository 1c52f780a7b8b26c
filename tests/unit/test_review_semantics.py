"""Reviewer's probes of kernel semantics: combinations of lanes, superseding, joins,
timeouts, cancelling, callbacks and outbound completion, through the public API.

Every test also checks that the run terminates cleanly (:func:`_settled`): a drain leaves
no unfinished action and no queued message, unless the test says what still waits.
"""

from __future__ import annotations

from typing import Any

from actors import Server, clock_of, records, statuses

from stepkernel import ActionStatus, App, Registry
from stepkernel.domain.records import AchievementRecord
from stepkernel.testing import drain

_SUCCEEDED = ActionStatus.SUCCEEDED


def _id(action: Any) -> str:
    """The id of a snapshot that must have one."""
    assert action.id is not None
    return str(action.id)


def _settled(app: App) -> None:
    """Nothing is left unfinished and nothing is queued."""
    assert app.unfinished() == []
    assert app.store.queued() == []


def _hold_lane(reg: Registry, lane: str = "L") -> None:
    """``hold``: an outbound action on lane *lane* that waits until completed."""
    reg.action(
        Server,
        "hold",
        outbound=True,
        concurrency_key=lambda s, *a: lane,
        steps=[lambda step, s, *a: None],
    )


def _achievements(app: App) -> dict[str, str]:
    """Checksum key -> achieved action id (erased, claimed scopes left out)."""
    return {
        r.key: r.action_id
        for r in records(app).values()
        if isinstance(r, AchievementRecord) and r.achieved is not None
    }


# -- achievements ----------------------------------------------------------------------------


def _configure(reg: Registry, runs: list[Any]) -> None:
    """``configure(config)``: outbound, checksum = config, default lane per actor."""

    def body(step: Any, s: Server, config: Any) -> None:
        runs.append(config)

    reg.action(Server, "configure", outbound=True, checksum=lambda s, c: c, steps=[body])


def test_finish_does_not_grant_achievement_over_started_successor(reg: Registry, app: App) -> None:
    """When ``v1`` succeeds and the queued ``v2`` starts on the same lane in that commit,
    ``v2`` starting erases the achievement: invoking ``v1`` again while ``v2`` performs
    must queue (``v1`` must be re-applied after ``v2``), not be skipped as achieved."""
    runs: list[Any] = []
    _configure(reg, runs)
    first = app.invoke_now(Server(1), "configure", "v1")
    second = app.invoke_now(Server(1), "configure", "v2")
    app.complete(_id(first))
    drain(app)
    assert app.get(_id(second)).awaiting_completion
    again = app.invoke_later(Server(1), "configure", "v1")
    assert again.outcome == "queued"


def test_start_erases_achievement_even_when_the_new_action_fails(reg: Registry, app: App) -> None:
    """Starting ``v2`` erases ``v1``'s achievement; ``v2`` failing does not restore it,
    so ``v1`` runs again (the scope's state is unknown after a failed change)."""
    runs: list[Any] = []
    _configure(reg, runs)
    first = app.invoke_now(Server(1), "configure", "v1")
    app.complete(_id(first))
    second = app.invoke_now(Server(1), "configure", "v2")
    app.complete(_id(second), "failed")
    again = app.invoke_now(Server(1), "configure", "v1")
    assert again.outcome == "created"
    app.complete(_id(again))
    drain(app)
    assert runs == ["v1", "v2", "v1"]
    _settled(app)


# -- superseding and cancelling --------------------------------------------------------------


def _parents_on_lane(reg: Registry) -> None:
    """``hold`` holds lane ``L``; ``parent`` fans out one ``work`` child onto ``L``."""
    _hold_lane(reg)
    reg.action(Server, "work", concurrency_key=lambda s, *a: "L", steps=[lambda step, s, *a: None])
    reg.action(Server, "parent", steps=[lambda step, s: step.do("work")])


def test_cancel_lets_go_of_superseding_child(reg: Registry, app: App) -> None:
    """Tree 1's queued child is superseded by tree 2's; both roots are cancelled.  Nobody
    waits on tree 2's child any more, so it is cancelled and never runs."""
    _parents_on_lane(reg)
    holder = app.invoke_now(Server(9), "hold")
    one = app.invoke_now(Server(1), "parent")
    two = app.invoke_now(Server(2), "parent")
    app.cancel(_id(one))
    app.cancel(_id(two))
    drain(app)
    assert statuses(app, two.id) == {_id(two): "cancelled", f"{two.id}.0.0": "cancelled"}
    app.complete(_id(holder))
    drain(app)
    _settled(app)


def test_cancel_superseded_parent_keeps_superseding_child_for_its_tree(
    reg: Registry, app: App
) -> None:
    """Tree 1's queued child is superseded by tree 2's; cancelling tree 1 leaves tree 2's
    child queued and tree 2 succeeds once the lane frees up."""
    _parents_on_lane(reg)
    holder = app.invoke_now(Server(9), "hold")
    one = app.invoke_now(Server(1), "parent")
    two = app.invoke_now(Server(2), "parent")
    app.cancel(_id(one))
    drain(app)
    app.complete(_id(holder))
    drain(app)
    assert statuses(app, one.id) == {_id(one): "cancelled", f"{one.id}.0.0": "superseded"}
    assert statuses(app, two.id) == {_id(two): "succeeded", f"{two.id}.0.0": "succeeded"}
    _settled(app)


def test_supersede_after_superseded_parent_cancelled(reg: Registry, app: App) -> None:
    """Tree 1 is cancelled (its queued child cancelled with it) before tree 2's child
    queues: nothing is superseded and tree 2 alone is served."""
    _parents_on_lane(reg)
    holder = app.invoke_now(Server(9), "hold")
    one = app.invoke_now(Server(1), "parent")
    app.cancel(_id(one))
    drain(app)
    two = app.invoke_now(Server(2), "parent")
    app.complete(_id(holder))
    drain(app)
    assert statuses(app, one.id) == {_id(one): "cancelled", f"{one.id}.0.0": "cancelled"}
    assert statuses(app, two.id) == {_id(two): "succeeded", f"{two.id}.0.0": "succeeded"}
    _settled(app)


def test_cancel_root_with_child_queued_behind_other_tree(reg: Registry, app: App) -> None:
    """Cancelling a root whose only child is queued behind another tree's holder cancels
    the child and takes it off the lane; the holder is untouched and the lane empties."""
    _parents_on_lane(reg)
    holder = app.invoke_now(Server(9), "hold")
    root = app.invoke_now(Server(1), "parent")
    app.cancel(_id(root))
    drain(app)
    assert statuses(app, root.id) == {_id(root): "cancelled", f"{root.id}.0.0": "cancelled"}
    assert app.get(_id(holder)).awaiting_completion
    app.complete(_id(holder))
    drain(app)
    assert not [k for k in records(app) if k[0] == "lane"]
    _settled(app)


def test_superseding_child_inherits_cancelled_parent_before_cut(reg: Registry, app: App) -> None:
    """Tree 1 is cancelled but its cut has not been delivered when tree 2's child queues
    and supersedes tree 1's child: tree 2 still succeeds and nothing hangs."""
    _parents_on_lane(reg)
    holder = app.invoke_now(Server(9), "hold")
    one = app.invoke_now(Server(1), "parent")
    app.cancel(_id(one))
    two = app.invoke_now(Server(2), "parent")
    app.complete(_id(holder))
    drain(app)
    assert app.get(f"{one.id}.0.0").status is ActionStatus.SUPERSEDED
    assert statuses(app, two.id) == {_id(two): "succeeded", f"{two.id}.0.0": "succeeded"}
    _settled(app)


def test_two_children_into_one_busy_lane(reg: Registry, app: App) -> None:
    """A step fanning out two children onto a lane held by another tree is not a
    deadlock: the second supersedes the first, serves both dependencies, and the
    parent succeeds once the lane frees up."""
    _hold_lane(reg)
    reg.action(Server, "work", concurrency_key=lambda s, *a: "L", steps=[lambda step, s, *a: None])
    reg.action(Server, "pair", steps=[lambda step, s: step.on([Server(1), Server(2)], "work")])
    holder = app.invoke_now(Server(9), "hold")
    pair = app.invoke_now(Server(3), "pair")
    assert statuses(app, pair.id) == {
        _id(pair): "performing",
        f"{pair.id}.0.0": "superseded",
        f"{pair.id}.0.1": "pending",
    }
    app.complete(_id(holder))
    drain(app)
    assert app.get(_id(pair)).status is _SUCCEEDED
    _settled(app)


def test_two_children_into_one_free_lane(reg: Registry, app: App) -> None:
    """Two children onto a free lane: the first starts, the second queues behind its
    sibling (no false deadlock) and both run."""
    ran: list[int] = []
    reg.action(
        Server,
        "work",
        concurrency_key=lambda s, *a: "L",
        steps=[lambda step, s, *a: ran.append(s.id)],
    )
    reg.action(Server, "pair", steps=[lambda step, s: step.on([Server(1), Server(2)], "work")])
    pair = app.invoke_now(Server(3), "pair")
    drain(app)
    assert app.get(_id(pair)).status is _SUCCEEDED
    assert ran == [1, 2]
    _settled(app)


def test_callbacks_ran_does_not_grant_achievement_over_started_successor(
    reg: Registry, app: App
) -> None:
    """As above, when ``v1`` has an after callback: the successor ``v2`` starts when
    ``v1`` finishes, before the callback ran; once it ran, ``v1`` must still not count
    as achieved while ``v2`` performs."""
    runs: list[Any] = []
    _configure(reg, runs)
    reg.after(Server, "configure", "succeeded")(lambda action, s, c: None)
    first = app.invoke_now(Server(1), "configure", "v1")
    second = app.invoke_now(Server(1), "configure", "v2")
    app.complete(_id(first))
    drain(app)
    assert app.get(_id(second)).awaiting_completion
    assert app.invoke_later(Server(1), "configure", "v1").outcome == "queued"


# -- checksum joins ----------------------------------------------------------------------------


def _joins(reg: Registry) -> None:
    """``hold`` holds lane ``L``; ``sync(v)`` runs on ``L`` with checksum ``v``;
    ``parent(v)`` fans out ``sync(v)``."""
    _hold_lane(reg)
    reg.action(
        Server,
        "sync",
        concurrency_key=lambda s, v: "L",
        checksum=lambda s, v: v,
        checksum_key=lambda s, v: "scope",
        steps=[lambda step, s, v: None],
    )
    reg.action(Server, "parent", steps=[lambda step, s, v: step.do("sync", v)])


def test_join_target_superseded_hands_joiner_to_newer(reg: Registry, app: App) -> None:
    """A parent that joined a queued ``sync(a)`` waits, once a newer ``sync(b)``
    supersedes it, on ``sync(b)`` (superseding hands over *all* waiting parents, joiners
    included) and succeeds with it."""
    _joins(reg)
    holder = app.invoke_now(Server(9), "hold")
    owner = app.invoke_now(Server(1), "parent", "a")
    joiner = app.invoke_now(Server(2), "parent", "a")
    assert app.get(_id(joiner)).steps[0].dependencies == (f"{joiner.id}.0.0",)
    assert statuses(app, joiner.id) == {_id(joiner): "performing"}  # joined, no child
    newer = app.invoke_now(Server(3), "parent", "b")
    assert app.get(f"{owner.id}.0.0").superseded_by == f"{newer.id}.0.0"
    app.complete(_id(holder))
    drain(app)
    assert {app.get(_id(a)).status for a in (owner, joiner, newer)} == {_SUCCEEDED}
    _settled(app)


def test_join_target_superseded_by_failing_action_fails_joiner(reg: Registry, app: App) -> None:
    """The joiner inherits the outcome of the superseding action: when it fails, the
    joiner's step fails too (although what it asked for was never tried)."""
    _joins(reg)
    reg.action(
        Server, "bad", concurrency_key=lambda s: "L", steps=[lambda step, s: step.fail("no")]
    )
    holder = app.invoke_now(Server(9), "hold")
    app.invoke_now(Server(1), "parent", "a")
    joiner = app.invoke_now(Server(2), "parent", "a")
    app.invoke_now(Server(3), "bad")
    app.complete(_id(holder))
    drain(app)
    assert app.get(_id(joiner)).status is ActionStatus.FAILED
    _settled(app)


def test_join_target_kept_for_joiner_when_owner_cancelled(reg: Registry, app: App) -> None:
    """Cancelling the tree that created a queued ``sync(a)`` another tree joined only lets
    go of it: it stays queued, runs, and the joiner succeeds."""
    _joins(reg)
    holder = app.invoke_now(Server(9), "hold")
    owner = app.invoke_now(Server(1), "parent", "a")
    joiner = app.invoke_now(Server(2), "parent", "a")
    app.cancel(_id(owner))
    drain(app)
    assert app.get(f"{owner.id}.0.0").status is ActionStatus.PENDING
    app.complete(_id(holder))
    drain(app)
    assert app.get(f"{owner.id}.0.0").status is _SUCCEEDED
    assert app.get(_id(joiner)).status is _SUCCEEDED
    _settled(app)


def test_joiner_cancelled_target_still_serves_owner(reg: Registry, app: App) -> None:
    """Cancelling the joiner lets go of the joined action; the owner is still served."""
    _joins(reg)
    holder = app.invoke_now(Server(9), "hold")
    owner = app.invoke_now(Server(1), "parent", "a")
    joiner = app.invoke_now(Server(2), "parent", "a")
    app.cancel(_id(joiner))
    app.complete(_id(holder))
    drain(app)
    assert app.get(_id(owner)).status is _SUCCEEDED
    assert app.get(_id(joiner)).status is ActionStatus.CANCELLED
    _settled(app)


def test_failed_after_callback_fails_both_joined_parents(reg: Registry, app: App) -> None:
    """A child joined by two parents whose after callback keeps raising counts as
    unsuccessful for both: both parent steps fail, no achievement is granted, and the
    child's own status stays ``succeeded``."""
    _joins(reg)

    def boom(action: Any, s: Server, v: Any) -> None:
        raise RuntimeError("callback down")

    reg.after(Server, "sync", "succeeded")(boom)
    holder = app.invoke_now(Server(9), "hold")
    owner = app.invoke_now(Server(1), "parent", "a")
    joiner = app.invoke_now(Server(2), "parent", "a")
    app.complete(_id(holder))
    drain(app)
    assert app.get(_id(owner)).status is ActionStatus.FAILED
    assert app.get(_id(joiner)).status is ActionStatus.FAILED
    assert app.get(f"{owner.id}.0.0").status is _SUCCEEDED
    assert "scope" not in _achievements(app)
    _settled(app)


# -- timeouts ----------------------------------------------------------------------------------


def test_timeout_not_armed_while_pending_in_lane(reg: Registry, app: App) -> None:
    """A timeout is armed when the action *starts*: queued behind a holder for 100 s, an
    action with ``timeout=5`` is still pending, then gets its full 5 s once started."""
    _hold_lane(reg)
    reg.action(
        Server,
        "quick",
        timeout=5,
        concurrency_key=lambda s: "L",
        steps=[lambda step, s: step.wait(3)],
    )
    holder = app.invoke_now(Server(9), "hold")
    quick = app.invoke_now(Server(1), "quick")
    clock_of(app).advance(100)
    drain(app)
    assert app.get(_id(quick)).status is ActionStatus.PENDING
    app.complete(_id(holder))
    drain(app)
    done = app.get(_id(quick))
    assert done.status is _SUCCEEDED
    _settled(app)


def test_timeout_cuts_child_queued_in_lane(reg: Registry, app: App) -> None:
    """A parent timing out while its child is queued on a busy lane cancels the child and
    takes it off the lane; the lane's holder is untouched."""
    _hold_lane(reg)
    reg.action(Server, "work", concurrency_key=lambda s: "L", steps=[lambda step, s: None])
    reg.action(Server, "parent", timeout=5, steps=[lambda step, s: step.do("work")])
    holder = app.invoke_now(Server(9), "hold")
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    assert statuses(app, parent.id) == {
        _id(parent): "timed_out",
        f"{parent.id}.0.0": "cancelled",
    }
    app.complete(_id(holder))
    drain(app)
    _settled(app)


def test_timed_out_callbacks_run_before_grandparent_is_told(reg: Registry, app: App) -> None:
    """A timed-out action with a child in flight: its ``timed_out`` callback sees the
    final snapshot, its child is cancelled, and its own parent's step fails only after
    the callback ran."""
    seen: list[tuple[str, str]] = []
    _hold_lane(reg)
    reg.action(Server, "middle", timeout=5, steps=[lambda step, s: step.do("hold")])
    reg.action(Server, "top", steps=[lambda step, s: step.do("middle")])

    def noted(action: Any, s: Server) -> None:
        seen.append((action.status.value, app.get(_id(top)).status.value))

    reg.after(Server, "middle", "timed_out")(noted)
    top = app.invoke_now(Server(1), "top")
    drain(app)
    assert seen == [("timed_out", "performing")]
    assert statuses(app, top.id) == {
        _id(top): "failed",
        f"{top.id}.0.0": "timed_out",
        f"{top.id}.0.0.0.0": "cancelled",
    }
    _settled(app)


# -- outbound ----------------------------------------------------------------------------------


def test_early_failed_completion_waits_for_children(reg: Registry, app: App) -> None:
    """Completing an outbound action ``failed`` while its step's children are in flight
    is kept: the children run to the end (not cancelled), then the action fails with
    the completion."""
    reg.action(Server, "slow", steps=[lambda step, s: step.wait(10)])
    reg.action(Server, "ask", outbound=True, steps=[lambda step, s: step.do("slow")])
    ask = app.invoke_now(Server(1), "ask")
    kept = app.complete(_id(ask), "failed", {"why": "no"})
    assert (kept.outcome, kept.status) == ("kept", ActionStatus.PERFORMING)
    drain(app)
    done = app.get(_id(ask))
    assert (done.status, done.output) == (ActionStatus.FAILED, {"why": "no"})
    assert app.get(f"{ask.id}.0.0").status is _SUCCEEDED
    _settled(app)


def test_early_completion_dropped_when_child_fails(reg: Registry, app: App) -> None:
    """An early ``succeeded`` completion does not rescue an outbound action whose step
    fails (a child failed): it ends ``failed``, without the completion's output."""
    reg.action(Server, "bad", steps=[lambda step, s: step.fail("no")])
    reg.action(Server, "ask", outbound=True, steps=[lambda step, s: step.do("bad")])
    ask = app.invoke_later(Server(1), "ask")
    app.complete(_id(ask), "succeeded", {"ok": 1})
    drain(app)
    done = app.get(_id(ask))
    assert (done.status, done.output) == (ActionStatus.FAILED, None)
    _settled(app)


def _asks(reg: Registry) -> None:
    """``ask(n)``: outbound, each ``n`` on its own lane (several can perform at once)."""
    reg.action(Server, "noop", steps=[lambda step, s: None])
    reg.action(
        Server,
        "ask",
        outbound=True,
        concurrency_key=lambda s, n: f"ask/{n}",
        steps=[lambda step, s, n: None],
    )


def test_complete_outbound_picks_the_oldest_of_two_waiting(reg: Registry, app: App) -> None:
    """With two ``ask`` actions awaiting completion on one actor, ``complete_outbound``
    answers the one that started first (completions answer requests in order)."""
    _asks(reg)
    older = app.invoke_now(Server(1), "ask", 1)
    newer = app.invoke_now(Server(1), "ask", 2)
    done = app.complete_outbound(Server(1), "ask")
    assert done.id == older.id
    assert app.get(_id(newer)).awaiting_completion


def test_complete_outbound_orders_sequential_ids_numerically(reg: Registry, app: App) -> None:
    """The same with ids ``r9`` and ``r10`` started at one instant: ``r9`` is first
    (ids are not compared as plain strings)."""
    _asks(reg)
    for _ in range(8):
        app.invoke_now(Server(2), "noop")
    older = app.invoke_now(Server(1), "ask", 1)
    newer = app.invoke_now(Server(1), "ask", 2)
    assert (older.id, newer.id) == ("r9", "r10")
    assert app.complete_outbound(Server(1), "ask").id == "r9"


def test_complete_outbound_prefers_an_action_already_waiting(reg: Registry, app: App) -> None:
    """``complete_outbound`` prefers an action already awaiting its completion over one
    still running its steps, even a newer one."""
    reg.action(Server, "slow", steps=[lambda step, s: step.wait(10)])
    reg.action(
        Server,
        "ask",
        outbound=True,
        concurrency_key=lambda s, n: f"ask/{n}",
        steps=[lambda step, s, n: step.do("slow") if n == 1 else None],
    )
    busy = app.invoke_now(Server(1), "ask", 1)
    waiting = app.invoke_now(Server(1), "ask", 2)
    done = app.complete_outbound(Server(1), "ask")
    assert (done.id, done.status) == (waiting.id, ActionStatus.SUCCEEDED)
    assert not app.get(_id(busy)).awaiting_completion


def test_early_completion_of_superseded_outbound_is_lost(reg: Registry, app: App) -> None:
    """A completion kept early by a *queued* outbound action goes with it when a newer
    action supersedes it: the newer one still waits for its own completion."""
    _hold_lane(reg)
    holder = app.invoke_now(Server(9), "hold")
    queued = app.invoke_now(Server(1), "hold")
    assert app.complete(_id(queued), "succeeded", {"n": 1}).outcome == "kept"
    newer = app.invoke_now(Server(2), "hold")
    app.complete(_id(holder))
    drain(app)
    assert app.get(_id(queued)).status is ActionStatus.SUPERSEDED
    assert app.get(_id(newer)).awaiting_completion


# -- steps: short circuits, retries -------------------------------------------------------------


def test_wait_with_only_short_circuited_children(reg: Registry, app: App) -> None:
    """A step that waits 5 s and fans out children that all short-circuit (before hooks
    complete them) is performing until the wait ends, then succeeds."""
    skip = reg.action(Server, "skip", steps=[lambda step, s: None])

    @skip.before
    def done_already(action: Any, s: Server) -> None:
        action.complete("succeeded")

    reg.action(
        Server,
        "parent",
        steps=[lambda step, s: (step.on([Server(1), Server(2)], "skip"), step.wait(5))],
    )
    start = clock_of(app).now()
    parent = app.invoke_now(Server(3), "parent")
    assert parent.status is ActionStatus.PERFORMING
    drain(app)
    done = app.get(_id(parent))
    assert (done.status, done.finished_at) == (_SUCCEEDED, start + 5)
    assert statuses(app, parent.id) == {_id(parent): "succeeded"}
    _settled(app)


def test_cancelled_short_circuit_fails_step_after_wait(reg: Registry, app: App) -> None:
    """A child cancelled by its before hook fails its parent's step, but only once the
    step's wait settled too (no fail-fast)."""
    skip = reg.action(Server, "skip", steps=[lambda step, s: None])

    @skip.before
    def refuse(action: Any, s: Server) -> None:
        action.cancel()

    reg.action(Server, "parent", steps=[lambda step, s: (step.do("skip"), step.wait(5))])
    start = clock_of(app).now()
    parent = app.invoke_now(Server(3), "parent")
    assert parent.status is ActionStatus.PERFORMING
    drain(app)
    done = app.get(_id(parent))
    assert (done.status, done.finished_at) == (ActionStatus.FAILED, start + 5)
    _settled(app)


def test_retry_after_fan_out_creates_children_once(reg: Registry, app: App) -> None:
    """A step that fans out a child and then raises creates nothing on that attempt; the
    retry fans out again and the child exists, and runs, once."""
    ran: list[int] = []
    reg.action(Server, "work", steps=[lambda step, s: ran.append(step.attempt)])

    def flaky(step: Any, s: Server) -> None:
        step.do("work")
        if step.attempt == 0:
            raise RuntimeError("flaky")

    reg.action(Server, "parent", steps=[flaky])
    parent = app.invoke_now(Server(1), "parent")
    assert statuses(app, parent.id) == {_id(parent): "performing"}
    drain(app)
    assert statuses(app, parent.id) == {_id(parent): "succeeded", f"{parent.id}.0.0": "succeeded"}
    assert ran == [0]
    _settled(app)


# -- idempotency keys ----------------------------------------------------------------------------


def test_idempotency_key_after_root_finished_returns_it(reg: Registry, app: App) -> None:
    """Reusing an idempotency key after its root finished returns that root (outcome
    ``exists``) and runs nothing, even with different arguments."""
    ran: list[Any] = []
    reg.action(Server, "deploy", steps=[lambda step, s, v: ran.append(v)])
    first = app.invoke_now(Server(1), "deploy", "v1", idempotency_key="k")
    again = app.invoke_now(Server(1), "deploy", "v2", idempotency_key="k")
    drain(app)
    assert (again.id, again.outcome, again.status) == (first.id, "exists", _SUCCEEDED)
    assert again.arguments == ("v1",)
    assert ran == ["v1"]
    _settled(app)


# -- deadlocks ---------------------------------------------------------------------------------


def test_two_children_into_lane_whose_holder_waits_on_parent(reg: Registry, app: App) -> None:
    """The lane ``L`` is held by an action waiting (through a queued child) on the
    parent's lane: both children the parent fans out onto ``L`` are deadlocked, the
    parent fails, and the holder's tree then completes."""
    reg.action(Server, "inner", concurrency_key=lambda s: "A", steps=[lambda step, s: None])
    reg.action(
        Server, "blocker", concurrency_key=lambda s: "L", steps=[lambda step, s: step.do("inner")]
    )
    reg.action(Server, "work", concurrency_key=lambda s: "L", steps=[lambda step, s: None])
    reg.action(
        Server,
        "parent",
        concurrency_key=lambda s: "A",
        steps=[lambda step, s: step.on([Server(1), Server(2)], "work")],
    )
    parent = app.invoke_later(Server(3), "parent")
    blocker = app.invoke_now(Server(4), "blocker")
    drain(app)
    assert statuses(app, parent.id) == {
        _id(parent): "failed",
        f"{parent.id}.0.0": "deadlocked",
        f"{parent.id}.0.1": "deadlocked",
    }
    assert app.get(_id(blocker)).status is _SUCCEEDED
    _settled(app)


# -- more lane/achievement combinations -----------------------------------------------------------


def test_join_holder_although_newer_request_is_queued(reg: Registry, app: App) -> None:
    """``v1`` holds the lane and ``v2`` is queued behind it; a new ``v1`` *joins the
    holder* (documented: holder or queued), so it is served before ``v2`` runs and the
    last request (``v1``) is not what ends up applied."""
    runs: list[Any] = []
    _configure(reg, runs)
    first = app.invoke_now(Server(1), "configure", "v1")
    second = app.invoke_now(Server(1), "configure", "v2")
    third = app.invoke_later(Server(1), "configure", "v1")
    assert (third.outcome, third.id) == ("joined", first.id)
    drain(app, outbound=lambda action: "succeeded")
    assert runs == ["v1", "v2"]
    assert list(_achievements(app).values()) == [second.id]
    _settled(app)


def test_queued_action_achieved_elsewhere_succeeds_unrun(reg: Registry, app: App) -> None:
    """A queued ``sync(a)`` whose checksum becomes achieved (by an identical action on
    another lane of the same checksum key) while it waits succeeds without running when
    its turn comes, and its parent succeeds."""
    ran: list[str] = []
    _hold_lane(reg)
    reg.action(
        Server,
        "sync",
        concurrency_key=lambda s, v: f"L{s.id}" if s.id > 1 else "L",
        checksum=lambda s, v: v,
        checksum_key=lambda s, v: "scope",
        steps=[lambda step, s, v: ran.append(f"{s.id}:{v}")],
    )
    reg.action(Server, "parent", steps=[lambda step, s, v: step.do("sync", v)])
    holder = app.invoke_now(Server(9), "hold")
    parent = app.invoke_now(Server(1), "parent", "a")
    elsewhere = app.invoke_now(Server(2), "sync", "a")
    assert elsewhere.status is _SUCCEEDED
    app.complete(_id(holder))
    drain(app)
    child = app.get(f"{parent.id}.0.0")
    assert (child.status, child.steps) == (_SUCCEEDED, ())
    assert app.get(_id(parent)).status is _SUCCEEDED
    assert ran == ["2:a"]
    _settled(app)


def test_cancel_parent_of_sibling_superseded_children(reg: Registry, app: App) -> None:
    """Cancelling a parent whose two children on a busy lane superseded one another
    cancels the survivor (every dependency it serves is the parent's) and frees the lane."""
    _hold_lane(reg)
    reg.action(Server, "work", concurrency_key=lambda s: "L", steps=[lambda step, s: None])
    reg.action(Server, "pair", steps=[lambda step, s: step.on([Server(1), Server(2)], "work")])
    holder = app.invoke_now(Server(9), "hold")
    pair = app.invoke_now(Server(3), "pair")
    app.cancel(_id(pair))
    drain(app)
    assert statuses(app, pair.id) == {
        _id(pair): "cancelled",
        f"{pair.id}.0.0": "superseded",
        f"{pair.id}.0.1": "cancelled",
    }
    app.complete(_id(holder))
    drain(app)
    _settled(app)
