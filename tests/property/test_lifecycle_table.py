"""The compiled lifecycle tables are total: every (status, trigger) pair gives the
table's target or the one documented error, and a broken edge list is refused with every
problem reported at once."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Any

import pytest
from hypothesis import given

from stepkernel import IllegalTransitionError
from stepkernel.domain import lifecycle
from stepkernel.domain.errors import LifecycleDefinitionError
from stepkernel.domain.lifecycle import (
    ACTION_EDGES,
    ACTION_TABLE,
    STEP_TABLE,
    build_machine,
    compile_table,
    lifecycle_fingerprint,
    next_action_status,
    next_step_status,
)
from stepkernel.domain.status import ActionStatus, ActionTrigger, StepStatus, StepTrigger
from stepkernel.testing.strategies import (
    action_statuses,
    action_triggers,
    step_statuses,
    step_triggers,
)


@given(action_statuses, action_triggers)
def test_next_action_status_is_total(status: ActionStatus, trigger: ActionTrigger) -> None:
    """next_action_status returns ACTION_TABLE's target, or raises IllegalTransitionError
    carrying the status and trigger."""
    if (status, trigger) in ACTION_TABLE:
        assert next_action_status(status, trigger) is ACTION_TABLE[(status, trigger)]
        return
    with pytest.raises(IllegalTransitionError) as raised:
        next_action_status(status, trigger, action_id="a1")
    assert raised.value.fields["status"] == status.value
    assert raised.value.fields["trigger"] == trigger.value
    assert raised.value.fields["action_id"] == "a1"


@given(step_statuses, step_triggers)
def test_next_step_status_is_total(status: StepStatus, trigger: StepTrigger) -> None:
    """next_step_status returns STEP_TABLE's target, or raises IllegalTransitionError
    carrying the status and trigger."""
    if (status, trigger) in STEP_TABLE:
        assert next_step_status(status, trigger) is STEP_TABLE[(status, trigger)]
        return
    with pytest.raises(IllegalTransitionError) as raised:
        next_step_status(status, trigger, step_id="a1#0")
    assert raised.value.fields["status"] == status.value
    assert raised.value.fields["trigger"] == trigger.value
    assert raised.value.fields["step_id"] == "a1#0"


def test_action_table_terminal_statuses_have_no_outgoing_edges() -> None:
    """ACTION_TABLE has no edge leaving a terminal action status."""
    assert not [key for key in ACTION_TABLE if key[0].terminal]


def test_step_table_terminal_statuses_have_no_outgoing_edges() -> None:
    """STEP_TABLE has no edge leaving a terminal step status."""
    assert not [key for key in STEP_TABLE if key[0].terminal]


def _reachable(table: Mapping[tuple[Any, Any], Any], initial: Enum) -> set[Enum]:
    seen = {initial}
    frontier = [initial]
    while frontier:
        here = frontier.pop()
        for (source, _trigger), dest in table.items():
            if source == here and dest not in seen:
                seen.add(dest)
                frontier.append(dest)
    return seen


def test_action_table_every_status_reachable() -> None:
    """Every ActionStatus is reachable from pending in ACTION_TABLE."""
    assert _reachable(ACTION_TABLE, ActionStatus.PENDING) == set(ActionStatus)


def test_step_table_every_status_reachable() -> None:
    """Every StepStatus is reachable from pending in STEP_TABLE."""
    assert _reachable(STEP_TABLE, StepStatus.PENDING) == set(StepStatus)


def test_action_table_is_read_only() -> None:
    """The compiled ACTION_TABLE cannot be modified."""
    with pytest.raises(TypeError):
        ACTION_TABLE[(ActionStatus.SUCCEEDED, ActionTrigger.START)] = ActionStatus.PENDING  # type: ignore[index]


class _Light(StrEnum):
    RED = "red"
    GREEN = "green"
    OFF = "off"
    BROKEN = "broken"


class _Switch(StrEnum):
    GO = "go"
    STOP = "stop"
    KILL = "kill"


def test_compile_table_reports_every_problem_at_once() -> None:
    """compile_table collects an unknown destination, a duplicate edge, an edge leaving a
    terminal status and an unreachable status into one LifecycleDefinitionError."""
    machine = build_machine(
        _Light,
        [
            (_Switch.GO, _Light.RED, _Light.GREEN),
            (_Switch.GO, _Light.RED, _Light.GREEN),  # a second edge for (red, go)
            (_Switch.STOP, _Light.GREEN, _Light.OFF),
            (_Switch.KILL, _Light.OFF, _Light.RED),  # leaves terminal "off"
        ],
        _Light.RED,
    )
    # transitions checks string destinations lazily: an unknown one is accepted here.
    machine.add_transition("stop", "red", "amber")
    with pytest.raises(LifecycleDefinitionError) as raised:
        compile_table(
            machine, _Light, _Switch, initial=_Light.RED, terminal=frozenset({_Light.OFF})
        )
    problems = " | ".join(raised.value.fields["problems"])
    assert "'amber'" in problems
    assert "two edges for ('red', 'go')" in problems
    assert "leaves terminal status 'off'" in problems
    assert "'broken' is unreachable" in problems
    assert len(raised.value.fields["problems"]) == 4


def test_compile_table_accepts_a_consistent_machine() -> None:
    """compile_table returns the (status, trigger) -> status mapping of consistent edges."""
    machine = build_machine(
        _Light,
        [
            (_Switch.GO, _Light.RED, _Light.GREEN),
            (_Switch.STOP, _Light.GREEN, _Light.OFF),
            (_Switch.KILL, _Light.RED, _Light.BROKEN),
        ],
        _Light.RED,
    )
    table = compile_table(
        machine,
        _Light,
        _Switch,
        initial=_Light.RED,
        terminal=frozenset({_Light.OFF, _Light.BROKEN}),
    )
    assert dict(table) == {
        (_Light.RED, _Switch.GO): _Light.GREEN,
        (_Light.GREEN, _Switch.STOP): _Light.OFF,
        (_Light.RED, _Switch.KILL): _Light.BROKEN,
    }


def test_lifecycle_fingerprint_changes_when_an_edge_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lifecycle_fingerprint is stable, and differs once one edge's destination changes
    (cancelling a pending action ending it failed instead of cancelled)."""
    before = lifecycle_fingerprint()
    assert lifecycle_fingerprint() == before
    moved = (ActionTrigger.CANCEL, ActionStatus.PENDING)
    edges = [(t, s, ActionStatus.FAILED if (t, s) == moved else d) for t, s, d in ACTION_EDGES]
    changed = compile_table(
        build_machine(ActionStatus, edges, ActionStatus.PENDING),
        ActionStatus,
        ActionTrigger,
        initial=ActionStatus.PENDING,
        terminal=frozenset(s for s in ActionStatus if s.terminal),
    )
    assert dict(changed) != dict(ACTION_TABLE)
    monkeypatch.setattr(lifecycle, "ACTION_TABLE", changed)
    assert lifecycle_fingerprint() != before
