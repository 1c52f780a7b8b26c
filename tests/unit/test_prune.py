"""Pruning finished trees and retrying finished roots."""

from __future__ import annotations

from typing import Any

import pytest
from actors import Server, clock_of, records

from stepkernel import ActionNotFoundError, ActionStatus, App, InvalidInputError, Registry
from stepkernel.ports.store import ActionQuery
from stepkernel.testing import drain


def _tree(reg: Registry) -> None:
    reg.action(Server, "leaf", steps=[lambda step, s: None])
    reg.action(Server, "root", steps=[lambda step, s: step.do("leaf")])


def test_prune_deletes_a_whole_finished_tree(reg: Registry, app: App) -> None:
    """A finished tree older than the cutoff is deleted, root and descendants."""
    _tree(reg)
    root = app.invoke_now(Server(1), "root")
    drain(app)
    clock_of(app).advance(100)
    assert app.prune(older_than=50) == 2
    assert records(app) == {}
    with pytest.raises(ActionNotFoundError):
        app.get(root.id or "")


def test_prune_takes_a_tree_that_finished_exactly_at_the_cutoff(reg: Registry, app: App) -> None:
    """A tree created and finished at the very moment of the cutoff is old enough: the
    query that finds candidates (created before the cutoff, an indexed range) keeps the
    boundary, and a tree created a moment later is kept."""
    _tree(reg)
    app.invoke_now(Server(1), "root")
    drain(app)
    clock_of(app).advance(1)
    later = app.invoke_now(Server(2), "root")
    drain(app)
    clock_of(app).advance(49)
    assert app.prune(older_than=50) == 2
    assert [r.id for r in app.find(ActionQuery(root_id=later.id))] != []


def test_prune_keeps_recent_and_unfinished_trees(reg: Registry, app: App) -> None:
    """Trees that finished after the cutoff, or are still running, are kept."""
    _tree(reg)
    reg.action(Server, "slow", steps=[lambda step, s: step.wait(3600)])
    done = app.invoke_now(Server(1), "root")
    drain(app)
    slow = app.invoke_now(Server(2), "slow")
    clock_of(app).advance(10)
    assert app.prune(older_than=50) == 0
    assert app.get(done.id or "").status is ActionStatus.SUCCEEDED
    assert app.get(slow.id or "").status is ActionStatus.PERFORMING


def test_prune_keeps_a_tree_whose_callbacks_have_not_run(reg: Registry, app: App) -> None:
    """A root that finished but still owes its after callbacks is not pruned."""
    calls: list[Any] = []
    definition = reg.action(Server, "noted", steps=[lambda step, s: None])
    definition.after("succeeded")(lambda action, s: calls.append(action.id))
    root = app.invoke_now(Server(1), "noted")
    assert app.get(root.id or "").callbacks == "pending"
    clock_of(app).advance(100)
    assert app.prune(older_than=50) == 0
    drain(app)
    assert calls == [root.id]


def test_retry_invokes_a_finished_root_as_a_new_root(reg: Registry, app: App) -> None:
    """``retry`` re-invokes a finished root with the same actor, name and arguments."""
    seen: list[Any] = []
    reg.action(Server, "echo", steps=[lambda step, s, x: seen.append(x)])
    first = app.invoke_now(Server(1), "echo", 7)
    again = app.retry(first.id or "")
    drain(app)
    assert again.id != first.id
    assert seen == [7, 7]


def test_retry_refuses_unfinished_and_unknown_actions(reg: Registry, app: App) -> None:
    """An unfinished action cannot be retried; an unknown id raises ActionNotFoundError."""
    reg.action(Server, "slow", steps=[lambda step, s: step.wait(3600)])
    slow = app.invoke_now(Server(1), "slow")
    with pytest.raises(InvalidInputError):
        app.retry(slow.id or "")
    with pytest.raises(ActionNotFoundError):
        app.retry("nope")
