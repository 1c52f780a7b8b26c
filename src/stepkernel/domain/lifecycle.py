"""Theory of operation: the action and step lifecycles.

An **action** is created ``pending``.  When its lane is free it *starts* and becomes
``performing``; it then runs its steps one at a time.  From ``performing`` it ends
``succeeded`` (every step succeeded and, for outbound actions, an outside completion
arrived), ``failed`` (a step failed), ``cancelled`` (from outside, or its tree was cut),
or ``timed_out`` (its deadline passed).  A ``pending`` action may instead be
``superseded`` (a newer action queued on its lane took over its waiting parents),
``deadlocked`` (it would queue behind one of its own ancestors) or ``cancelled``.  (An
action whose stored record cannot be read is replaced by a failed stand-in built
directly, not by an edge of this machine.)

A **step** is created ``pending``.  When the outcome of its body is applied it moves to
``performing`` (it now waits on the children and timers it fanned out) and then to
``succeeded`` or ``failed`` once they have all settled; a body that failed outright
moves it straight to ``failed``.

Nothing here is hand-coded in the kernel: the edges below are declared once with
``transitions`` (a module-level ``Machine(model=None, auto_transitions=False)`` without
callbacks), validated while compiling, and frozen into read-only tables mapping
``(status, trigger) -> status``.  The kernel only ever looks transitions up in those
tables; guards (which trigger to fire) are plain functions in the kernel.  The same edges
render the diagrams in ``docs/lifecycle.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import TypeVar

from transitions import Machine

from stepkernel.domain.errors import IllegalTransitionError, LifecycleDefinitionError
from stepkernel.domain.status import ActionStatus, ActionTrigger, StepStatus, StepTrigger

S = TypeVar("S", bound=Enum)
T = TypeVar("T", bound=Enum)

_A = ActionStatus
_AT = ActionTrigger

ACTION_EDGES: tuple[tuple[ActionTrigger, ActionStatus, ActionStatus], ...] = (
    (_AT.START, _A.PENDING, _A.PERFORMING),
    (_AT.SUCCEED, _A.PERFORMING, _A.SUCCEEDED),
    (_AT.FAIL, _A.PERFORMING, _A.FAILED),
    (_AT.CANCEL, _A.PENDING, _A.CANCELLED),
    (_AT.CANCEL, _A.PERFORMING, _A.CANCELLED),
    (_AT.SUPERSEDE, _A.PENDING, _A.SUPERSEDED),
    (_AT.TIME_OUT, _A.PERFORMING, _A.TIMED_OUT),
    (_AT.DEADLOCK, _A.PENDING, _A.DEADLOCKED),
)

_S = StepStatus
_ST = StepTrigger

STEP_EDGES: tuple[tuple[StepTrigger, StepStatus, StepStatus], ...] = (
    (_ST.BODY_RAN, _S.PENDING, _S.PERFORMING),
    (_ST.SUCCEED, _S.PERFORMING, _S.SUCCEEDED),
    (_ST.FAIL, _S.PERFORMING, _S.FAILED),
    (_ST.FAIL, _S.PENDING, _S.FAILED),
)


def build_machine(states: type[S], edges: Iterable[tuple[T, S, S]], initial: S) -> Machine:
    """Declare *edges* on a model-less ``transitions`` machine (no callbacks)."""
    return Machine(
        model=None,
        states=[s.value for s in states],
        transitions=[[t.value, src.value, dst.value] for t, src, dst in edges],
        initial=initial.value,
        auto_transitions=False,
    )


def compile_table(
    machine: Machine,
    states: type[S],
    triggers: type[T],
    *,
    initial: S,
    terminal: frozenset[S],
) -> Mapping[tuple[S, T], S]:
    """Compile *machine* into a read-only ``(status, trigger) -> status`` mapping.

    Every problem is collected and reported at once in a
    :class:`LifecycleDefinitionError`: unknown state or trigger names (``transitions``
    checks string states lazily), two edges for one (status, trigger), edges leaving a
    terminal status, and statuses unreachable from *initial*.
    """
    problems: list[str] = []
    by_name_state = {s.value: s for s in states}
    by_name_trigger = {t.value: t for t in triggers}
    table: dict[tuple[S, T], S] = {}
    for trigger_name, event in machine.events.items():
        trigger = by_name_trigger.get(trigger_name)
        if trigger is None:
            problems.append(f"trigger {trigger_name!r} is not a {triggers.__name__}")
            continue
        for source_name, edges in event.transitions.items():
            source = by_name_state.get(source_name)
            if source is None:
                problems.append(f"source {source_name!r} is not a {states.__name__}")
                continue
            for edge in edges:
                dest = by_name_state.get(edge.dest)
                if dest is None:
                    problems.append(f"destination {edge.dest!r} is not a {states.__name__}")
                    continue
                if source in terminal:
                    problems.append(f"{trigger_name!r} leaves terminal status {source_name!r}")
                if (source, trigger) in table:
                    problems.append(f"two edges for ({source_name!r}, {trigger_name!r})")
                table[(source, trigger)] = dest
    reachable = {initial}
    frontier = [initial]
    while frontier:
        here = frontier.pop()
        for (src, _trigger), dst in table.items():
            if src == here and dst not in reachable:
                reachable.add(dst)
                frontier.append(dst)
    problems.extend(
        f"status {s.value!r} is unreachable from {initial.value!r}"
        for s in states
        if s not in reachable
    )
    if problems:
        raise LifecycleDefinitionError(
            "lifecycle is inconsistent: " + "; ".join(problems), problems=tuple(problems)
        )
    return MappingProxyType(table)


ACTION_MACHINE = build_machine(ActionStatus, ACTION_EDGES, ActionStatus.PENDING)
STEP_MACHINE = build_machine(StepStatus, STEP_EDGES, StepStatus.PENDING)

ACTION_TABLE: Mapping[tuple[ActionStatus, ActionTrigger], ActionStatus] = compile_table(
    ACTION_MACHINE,
    ActionStatus,
    ActionTrigger,
    initial=ActionStatus.PENDING,
    terminal=frozenset(s for s in ActionStatus if s.terminal),
)
STEP_TABLE: Mapping[tuple[StepStatus, StepTrigger], StepStatus] = compile_table(
    STEP_MACHINE,
    StepStatus,
    StepTrigger,
    initial=StepStatus.PENDING,
    terminal=frozenset(s for s in StepStatus if s.terminal),
)


def next_action_status(
    status: ActionStatus, trigger: ActionTrigger, *, action_id: str = ""
) -> ActionStatus:
    """The status *trigger* moves an action in *status* to, or :class:`IllegalTransitionError`."""
    try:
        return ACTION_TABLE[(status, trigger)]
    except KeyError:
        raise IllegalTransitionError(
            f"action {action_id or '?'}: no edge {trigger.value!r} from {status.value!r}",
            action_id=action_id,
            status=status.value,
            trigger=trigger.value,
        ) from None


def next_step_status(
    status: StepStatus,
    trigger: StepTrigger,
    *,
    step_id: str = "",
    action_id: str = "",
    index: int = -1,
) -> StepStatus:
    """The status *trigger* moves a step in *status* to, or :class:`IllegalTransitionError`.

    The step is named in the error by *step_id*, or by *action_id* and *index* (the hot
    path passes those, so that the name is only formatted when there is an error)."""
    try:
        return STEP_TABLE[(status, trigger)]
    except KeyError:
        step_id = step_id or (f"{action_id}#{index}" if action_id else "")
        raise IllegalTransitionError(
            f"step {step_id or '?'}: no edge {trigger.value!r} from {status.value!r}",
            step_id=step_id,
            status=status.value,
            trigger=trigger.value,
        ) from None


def lifecycle_fingerprint() -> str:
    """SHA-256 of both compiled tables: changes whenever an edge changes."""
    lines = sorted(
        f"action {s.value} {t.value} {d.value}" for (s, t), d in ACTION_TABLE.items()
    ) + sorted(f"step {s.value} {t.value} {d.value}" for (s, t), d in STEP_TABLE.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
