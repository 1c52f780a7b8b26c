"""Deadlocks: a descendant that would queue behind an ancestor, and cross-lane cycles."""

from __future__ import annotations

from typing import Any

from actors import Server, statuses

from stepkernel import App, Registry, StepStatus
from stepkernel.testing import drain


def _in_lane(lane: str) -> Any:
    return lambda s, *a: lane


def test_child_in_ancestor_lane_is_deadlocked(reg: Registry, app: App) -> None:
    """A child that would join its parent's lane ends ``deadlocked`` and fails the
    parent step."""
    reg.action(Server, "child", concurrency_key=_in_lane("L"), steps=[lambda step, s: None])
    reg.action(
        Server, "parent", concurrency_key=_in_lane("L"), steps=[lambda step, s: step.do("child")]
    )
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    assert statuses(app, parent.id) == {parent.id: "failed", f"{parent.id}.0.0": "deadlocked"}
    assert app.get(parent.id or "").steps[0].status is StepStatus.FAILED


def test_grandchild_in_root_lane_is_deadlocked(reg: Registry, app: App) -> None:
    """A deeper descendant in the root's lane is deadlocked too; failures propagate up."""
    reg.action(Server, "leaf", concurrency_key=_in_lane("L"), steps=[lambda step, s: None])
    reg.action(Server, "middle", steps=[lambda step, s: step.do("leaf")])
    reg.action(
        Server, "root", concurrency_key=_in_lane("L"), steps=[lambda step, s: step.do("middle")]
    )
    root = app.invoke_now(Server(1), "root")
    drain(app)
    assert statuses(app, root.id) == {
        root.id: "failed",
        f"{root.id}.0.0": "failed",
        f"{root.id}.0.0.0.0": "deadlocked",
    }
    assert app.store.queued() == []


def _cross(reg: Registry) -> None:
    """``a`` holds L1 and fans out ``a_child`` into L2; ``b`` the other way round."""
    reg.action(Server, "a_child", concurrency_key=_in_lane("L2"), steps=[lambda step, s: None])
    reg.action(Server, "b_child", concurrency_key=_in_lane("L1"), steps=[lambda step, s: None])
    reg.action(
        Server, "a", concurrency_key=_in_lane("L1"), steps=[lambda step, s: step.do("a_child")]
    )
    reg.action(
        Server, "b", concurrency_key=_in_lane("L2"), steps=[lambda step, s: step.do("b_child")]
    )


def test_cross_lane_cycle_is_detected(reg: Registry, app: App) -> None:
    """A holds L1 and waits on a child in L2 while B holds L2 and waits on a child in
    L1: one child is deadlocked, everything finishes, nothing is left queued."""
    _cross(reg)
    a = app.invoke_later(Server(1), "a")
    b = app.invoke_later(Server(2), "b")
    drain(app)
    every = {**statuses(app, a.id), **statuses(app, b.id)}
    assert "deadlocked" in every.values()
    assert not {"pending", "performing"} & set(every.values())
    assert app.store.queued() == []
    assert {every[a.id or ""], every[b.id or ""]} == {"succeeded", "failed"}


def test_cross_lane_cycle_through_checksum_join_is_detected(reg: Registry, app: App) -> None:
    """A holds L1 and waits on a child queued in L2; B holds L2 and its child joins an
    identical action queued in L1 behind A: that cycle is a deadlock too, and nothing
    may be left pending without a wake-up."""
    reg.action(Server, "a_child", concurrency_key=_in_lane("L2"), steps=[lambda step, s: None])
    reg.action(
        Server,
        "twin",
        concurrency_key=_in_lane("L1"),
        checksum=lambda s: "same",
        checksum_key=lambda s: "twin",
        steps=[lambda step, s: None],
    )
    reg.action(
        Server, "a", concurrency_key=_in_lane("L1"), steps=[lambda step, s: step.do("a_child")]
    )
    reg.action(Server, "b", concurrency_key=_in_lane("L2"), steps=[lambda step, s: step.do("twin")])
    a = app.invoke_later(Server(1), "a")
    b = app.invoke_later(Server(2), "b")
    twin = app.invoke_later(Server(3), "twin")
    assert twin.outcome == "queued"
    drain(app)
    unfinished = [x.id for x in app.unfinished()]
    assert unfinished == [], f"left hanging with no wake-up: {unfinished}"
    assert app.get(a.id or "").status.value == "succeeded"
    assert b.id is not None


def test_cycle_through_superseding_action_is_detected(reg: Registry, app: App) -> None:
    """A holds L1 and its child queued on L2 is superseded by a root R, which takes
    over A's wait; when R runs and fans out into L1 (held by A), that closes a cycle
    and must be deadlocked rather than left hanging."""
    reg.action(
        Server, "hold", outbound=True, concurrency_key=_in_lane("L2"), steps=[lambda step, s: None]
    )
    reg.action(Server, "a_child", concurrency_key=_in_lane("L2"), steps=[lambda step, s: None])
    reg.action(Server, "r_child", concurrency_key=_in_lane("L1"), steps=[lambda step, s: None])
    reg.action(
        Server, "r", concurrency_key=_in_lane("L2"), steps=[lambda step, s: step.do("r_child")]
    )
    reg.action(
        Server, "a", concurrency_key=_in_lane("L1"), steps=[lambda step, s: step.do("a_child")]
    )
    holder = app.invoke_now(Server(9), "hold")
    a = app.invoke_now(Server(1), "a")
    r = app.invoke_later(Server(2), "r")
    assert app.get(f"{a.id}.0.0").superseded_by == r.id
    app.complete(holder.id or "")
    drain(app)
    unfinished = [x.id for x in app.unfinished()]
    assert unfinished == [], f"left hanging with no wake-up: {unfinished}"


def test_three_lane_cycle_is_detected(reg: Registry, app: App) -> None:
    """A cycle through three lanes (L1 -> L2 -> L3 -> L1) is detected as well."""
    for name, own, other in (("a", "L1", "L2"), ("b", "L2", "L3"), ("c", "L3", "L1")):
        reg.action(
            Server, f"{name}_child", concurrency_key=_in_lane(other), steps=[lambda step, s: None]
        )
        reg.action(
            Server,
            name,
            concurrency_key=_in_lane(own),
            steps=[lambda step, s, n=name: step.do(f"{n}_child")],
        )
    roots = [app.invoke_later(Server(1), name).id for name in "abc"]
    drain(app)
    every: dict[str, str] = {}
    for root in roots:
        every.update(statuses(app, root))
    assert list(every.values()).count("deadlocked") == 1
    assert app.unfinished() == []
