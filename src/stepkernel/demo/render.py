"""Terminal rendering of an action tree: statuses, timings, errors, optional ANSI colour.

Children are shown under the step that fanned them out (a child's id is
``<parent>.<step>.<ordinal>``).  ``detail=True`` adds wall-clock start and finish times.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

import attrs
from attrs import frozen

from stepkernel import Action, ActionStatus, ActionTree, Step, StepStatus

_COLOURS = {
    "pending": "2",
    "performing": "33",
    "succeeded": "32",
    "failed": "31",
    "cancelled": "35",
    "superseded": "35",
    "timed_out": "31",
    "deadlocked": "31",
}


@frozen
class Style:
    """How to draw: ANSI colour or not, box-drawing characters or ASCII."""

    colour: bool = False
    unicode: bool = True
    collapse: bool = False

    @property
    def branch(self) -> tuple[str, str, str, str]:
        """(tee, last, pipe, blank) prefixes."""
        if self.unicode:
            return ("├─ ", "└─ ", "│  ", "   ")
        return ("|- ", "`- ", "|  ", "   ")

    def status(self, status: str) -> str:
        if not self.colour:
            return status
        return f"\x1b[{_COLOURS.get(status, '0')}m{status}\x1b[0m"

    def dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.colour else text

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.colour else text


def duration(start: float | None, end: float | None, now: float | None = None) -> str:
    """``1.23s`` between *start* and *end* (or *now* while running); ``""`` if unknown."""
    if start is None:
        return ""
    stop = end if end is not None else now
    if stop is None:
        return ""
    return f"{max(0.0, stop - start):.2f}s"


def clock_time(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp % 1 * 1000):03d}"


def _shorten(text: str, width: int = 72) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _arguments(action: Action) -> str:
    return ", ".join(json.dumps(a) for a in action.arguments)


def action_line(action: Action, style: Style, *, now: float | None, detail: bool) -> str:
    """One line for *action*: name(args) on actor, status, duration, notes."""
    actor = f"{action.actor_type}/{action.actor_key}"
    parts = [
        f"{style.bold(action.name)}({_arguments(action)}) on {actor}",
        style.status(action.status.value),
    ]
    took = duration(action.started_at, action.finished_at, now)
    if took:
        parts.append(took)
    if action.awaiting_completion and not action.finished:
        parts.append("awaiting completion")
    if action.superseded_by:
        parts.append(f"superseded by {action.superseded_by}")
    if action.output is not None:
        parts.append("-> " + _shorten(json.dumps(action.output, sort_keys=True)))
    if detail:
        parts.append(
            f"[started {clock_time(action.started_at)}, finished {clock_time(action.finished_at)}]"
        )
    parts.append(style.dim(f"id={action.id}"))
    return "  ".join(parts)


def step_line(step: Step, style: Style, *, now: float | None, detail: bool) -> str:
    parts = [f"step {step.index + 1} {step.name}", style.status(step.status.value)]
    took = duration(step.started_at, step.finished_at, now)
    if took:
        parts.append(took)
    if step.attempt:
        parts.append(f"attempt {step.attempt + 1}")
    open_deps = len(step.dependencies) - len(step.settled)
    if step.status is StepStatus.PERFORMING and open_deps:
        parts.append(f"waiting on {open_deps} of {len(step.dependencies)}")
    if detail:
        parts.append(
            f"[started {clock_time(step.started_at)}, finished {clock_time(step.finished_at)}]"
        )
    return "  ".join(parts)


def _error_text(action_or_step: Action | Step, retried: bool) -> str | None:
    error = action_or_step.error
    if error is None:
        return None
    label = "last error" if retried else "error"
    return f"{label}: {error.type}: {error.message}"


def _step_of(parent_id: str | None, child: Action) -> tuple[int, int]:
    """(step index, ordinal) of *child* under *parent_id*, from the deterministic id."""
    if parent_id and child.id and child.id.startswith(parent_id + "."):
        head = child.id[len(parent_id) + 1 :].split(".")
        if len(head) >= 2 and head[0].isdigit() and head[1].isdigit():
            return int(head[0]), int(head[1])
    return -1, 0


def render_tree(
    tree: ActionTree,
    style: Style | None = None,
    *,
    now: float | None = None,
    detail: bool = False,
    collapse: bool = False,
) -> str:
    """The tree as text, one action or step per line.  ``collapse=True`` draws succeeded
    descendants as one line (a live view that fits a screen)."""
    style = style or Style()
    if collapse:
        style = attrs.evolve(style, collapse=True)
    lines: list[str] = []
    _render(tree, style, lines, prefix="", head="", now=now, detail=detail)
    return "\n".join(lines)


def _render(
    tree: ActionTree,
    style: Style,
    lines: list[str],
    *,
    prefix: str,
    head: str,
    now: float | None,
    detail: bool,
) -> None:
    tee, last, pipe, blank = style.branch
    action = tree.action
    lines.append(prefix + head + action_line(action, style, now=now, detail=detail))
    if style.collapse and head and action.status is ActionStatus.SUCCEEDED:
        return
    inner = prefix if not head else prefix + (blank if head == last else pipe)
    by_step: dict[int, list[ActionTree]] = {}
    for child in sorted(tree.children, key=lambda c: _step_of(action.id, c.action)):
        by_step.setdefault(_step_of(action.id, child.action)[0], []).append(child)
    entries: list[str | tuple[Step | None, list[ActionTree]]] = []
    if action.status is not ActionStatus.SUPERSEDED:
        entries.extend(_notes(action, retried=False))
    entries.extend((step, by_step.pop(step.index, [])) for step in action.steps)
    entries.extend((None, kids) for kids in by_step.values())
    for position, item in enumerate(entries):
        is_last = position == len(entries) - 1
        mark = last if is_last else tee
        if isinstance(item, str):
            lines.append(inner + mark + _red(style, item))
            continue
        step, kids = item
        below = inner + (blank if is_last else pipe)
        if step is not None:
            lines.append(inner + mark + step_line(step, style, now=now, detail=detail))
            step_notes = _notes(step, retried=step.status is not StepStatus.FAILED)
        else:
            lines.append(inner + mark + "other children")
            step_notes = []
        _children(kids, step_notes, style, lines, below, now=now, detail=detail)


def _children(
    kids: list[ActionTree],
    notes: list[str],
    style: Style,
    lines: list[str],
    prefix: str,
    *,
    now: float | None,
    detail: bool,
) -> None:
    tee, last, _, _ = style.branch
    count = len(notes) + len(kids)
    for position, note in enumerate(notes):
        lines.append(prefix + (last if position == count - 1 else tee) + _red(style, note))
    for position, kid in enumerate(kids, start=len(notes)):
        head = last if position == count - 1 else tee
        _render(kid, style, lines, prefix=prefix, head=head, now=now, detail=detail)


def _notes(item: Action | Step, *, retried: bool) -> list[str]:
    text = _error_text(item, retried)
    return [] if text is None else [text]


def _red(style: Style, text: str) -> str:
    return f"\x1b[31m{text}\x1b[0m" if style.colour else text


def render_forest(
    trees: Iterable[ActionTree], style: Style | None = None, *, now: float | None = None
) -> str:
    """Several trees, separated by blank lines."""
    return "\n\n".join(render_tree(t, style, now=now) for t in trees)
