"""Achievements: the last succeeded ``(checksum_key, checksum)`` skips identical work;
an identical action in flight is joined."""

from __future__ import annotations

from typing import Any

from actors import Server, records

from stepkernel import ActionStatus, App, Registry, checksum
from stepkernel.testing import drain


def _sync(reg: Registry, runs: list[Any], *, wait: float = 0) -> None:
    """``sync(value)``: checksum = value, scope ``scope`` (shared by every actor)."""

    def body(step: Any, s: Server, value: Any) -> None:
        runs.append(value)
        if value == "bad":
            step.fail("bad value")
        if wait:
            step.wait(wait)

    reg.action(
        Server,
        "sync",
        checksum=lambda s, v: v,
        checksum_key=lambda s, v: "scope",
        concurrency_key=lambda s, v: f"sync/{s.id}",
        steps=[body],
    )


def test_achieved_root_succeeds_without_records(reg: Registry, app: App) -> None:
    """An already achieved checksum succeeds at once: no id, no new records."""
    runs: list[Any] = []
    _sync(reg, runs)
    app.invoke_now(Server(1), "sync", "v1")
    before = records(app)
    again = app.invoke_now(Server(1), "sync", "v1")
    assert (again.id, again.status, again.outcome) == (None, ActionStatus.SUCCEEDED, "achieved")
    assert records(app) == before
    assert runs == ["v1"]


def test_achieved_child_settles_parent_at_once(reg: Registry, app: App) -> None:
    """A child whose checksum is achieved settles its parent step at once, no record."""
    runs: list[Any] = []
    _sync(reg, runs)
    reg.action(Server, "parent", steps=[lambda step, s: step.do("sync", "v1")])
    app.invoke_now(Server(1), "sync", "v1")
    parent = app.invoke_now(Server(1), "parent")
    assert parent.status is ActionStatus.SUCCEEDED
    assert [a.id for a in app.tree(parent.id or "").walk()] == [parent.id]
    assert runs == ["v1"]


def test_success_grants_achievement(reg: Registry, app: App) -> None:
    """Success stores the achievement: checksum and the action that earned it."""
    _sync(reg, [])
    action = app.invoke_now(Server(1), "sync", "v1")
    granted = records(app)[("achievement", "scope")]
    assert (granted.checksum, granted.action_id) == (checksum("v1"), action.id)


def test_achievement_upsert_over_existing(reg: Registry, app: App) -> None:
    """Two actions of one scope succeeding one after the other both grant: the second
    replaces the first (an upsert, no conflict)."""
    runs: list[Any] = []
    _sync(reg, runs, wait=5)
    first = app.invoke_now(Server(1), "sync", "v1")
    second = app.invoke_now(Server(2), "sync", "v2")
    drain(app)
    assert app.get(first.id or "").status is ActionStatus.SUCCEEDED
    assert app.get(second.id or "").status is ActionStatus.SUCCEEDED
    assert records(app)[("achievement", "scope")].checksum == checksum("v2")


def test_identical_in_flight_root_is_joined(reg: Registry, app: App) -> None:
    """An identical root invoked while one is in flight returns that one (joined)."""
    runs: list[Any] = []
    _sync(reg, runs, wait=5)
    first = app.invoke_now(Server(1), "sync", "v1")
    second = app.invoke_now(Server(1), "sync", "v1")
    assert (second.id, second.outcome) == (first.id, "joined")
    drain(app)
    assert runs == ["v1"]


def test_identical_in_flight_child_is_joined(reg: Registry, app: App) -> None:
    """Two parents fanning out the identical action: it runs once and both complete."""
    runs: list[Any] = []
    _sync(reg, runs, wait=5)
    reg.action(Server, "parent", steps=[lambda step, s: step.do("sync", "v1")])
    first = app.invoke_now(Server(1), "parent")
    second = app.invoke_now(Server(1), "parent")
    drain(app)
    assert runs == ["v1"]
    assert app.get(first.id or "").status is ActionStatus.SUCCEEDED
    assert app.get(second.id or "").status is ActionStatus.SUCCEEDED
    assert [a.id for a in app.tree(second.id or "").walk()] == [second.id]


def test_identical_child_twice_in_one_step(reg: Registry, app: App) -> None:
    """One step fanning out the identical action twice waits on one run of it."""
    runs: list[Any] = []
    _sync(reg, runs, wait=5)

    def twice(step: Any, s: Server) -> None:
        step.do("sync", "v1")
        step.do("sync", "v1")

    reg.action(Server, "parent", steps=[twice])
    parent = app.invoke_now(Server(1), "parent")
    drain(app)
    assert runs == ["v1"]
    assert app.get(parent.id or "").status is ActionStatus.SUCCEEDED


def test_superseded_action_is_never_joined(reg: Registry, app: App) -> None:
    """An identical action does not join one that was superseded in the meantime."""
    runs: list[Any] = []
    _sync(reg, runs)
    reg.action(
        Server,
        "hold",
        outbound=True,
        concurrency_key=lambda s: "sync/1",
        steps=[lambda step, s: None],
    )
    holder = app.invoke_now(Server(1), "hold")
    older = app.invoke_later(Server(1), "sync", "v1")
    app.invoke_later(Server(1), "sync", "v2")
    again = app.invoke_later(Server(1), "sync", "v1")
    assert app.get(older.id or "").status is ActionStatus.SUPERSEDED
    assert again.id != older.id
    assert again.outcome == "queued"
    app.complete(holder.id or "")
    drain(app)
    assert runs == ["v1"]
    assert app.get(again.id or "").status is ActionStatus.SUCCEEDED


def test_finished_action_is_never_joined(reg: Registry, app: App) -> None:
    """An identical action after a failed one runs again (not joined, not achieved)."""
    runs: list[Any] = []
    _sync(reg, runs)
    failed = app.invoke_now(Server(1), "sync", "bad")
    assert failed.status is ActionStatus.FAILED
    again = app.invoke_now(Server(1), "sync", "bad")
    assert again.id != failed.id
    assert again.outcome == "created"
    assert runs == ["bad", "bad"]


def test_starting_erases_scope_achievement(reg: Registry, app: App) -> None:
    """Starting an action erases its scope's achievement: after a different checksum
    started (and failed), the formerly achieved one runs again."""
    runs: list[Any] = []
    _sync(reg, runs)
    app.invoke_now(Server(1), "sync", "v1")
    assert records(app)[("achievement", "scope")].achieved == checksum("v1")
    app.invoke_now(Server(1), "sync", "bad")
    assert records(app)[("achievement", "scope")].achieved is None
    again = app.invoke_now(Server(1), "sync", "v1")
    assert again.outcome == "created"
    assert runs == ["v1", "bad", "v1"]


def test_queued_action_achieved_meanwhile_succeeds_without_running(reg: Registry, app: App) -> None:
    """An action queued behind its lane's holder, whose checksum gets achieved (under
    its checksum key) by another action meanwhile, succeeds without running when the
    lane frees up."""
    ran: list[str] = []
    reg.action(
        Server,
        "hold",
        outbound=True,
        concurrency_key=lambda s: "L",
        steps=[lambda step, s: None],
    )
    reg.action(
        Server,
        "build",
        concurrency_key=lambda s, lane: lane,
        checksum=lambda s, lane: "v1",
        checksum_key=lambda s, lane: "builds",
        steps=[lambda step, s, lane: ran.append(lane)],
    )
    holder = app.invoke_now(Server(1), "hold")
    queued = app.invoke_later(Server(1), "build", "L")
    assert queued.outcome == "queued"
    elsewhere = app.invoke_now(Server(2), "build", "M")
    assert elsewhere.status is ActionStatus.SUCCEEDED
    app.complete(holder.id or "")
    drain(app)
    assert app.get(queued.id or "").status is ActionStatus.SUCCEEDED
    assert ran == ["M"]
