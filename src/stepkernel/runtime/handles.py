"""Handles given to user code: steps, before hooks and jobs.

They only *collect* intent (children to fan out, waits, failure, arguments, completion);
the runtime turns what they collected into a kernel event after the user code returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from attrs import define, field

from stepkernel.domain.checksum import canonical_json
from stepkernel.domain.errors import InvalidInputError
from stepkernel.domain.status import ActionStatus


@define
class ChildIntent:
    """A child action requested by a step body."""

    actor: Any
    name: str
    arguments: tuple[Any, ...]


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidInputError(f"wait needs seconds >= 0, got {value!r}", value=value)
    return float(value)


@define
class StepHandle:
    """What a step body receives as its first argument.

    ``do(name, *args)`` fans out an action on the same actor; ``on(actors, name, *args)``
    on each actor (``None`` entries are skipped); ``wait(seconds)`` a timed wait;
    ``fail(reason)`` marks the step failed without raising.  The step completes when
    everything it fanned out has settled.
    """

    action_id: str
    index: int
    name: str
    attempt: int
    actor: Any
    arguments: tuple[Any, ...]
    _validate: Callable[[Any, str], object] | None = field(repr=False, default=None)
    children: list[ChildIntent] = field(factory=list)
    waits: list[float] = field(factory=list)
    failure: str | None = None

    def do(self, name: str, *arguments: Any) -> None:
        """Fan out action *name* on this step's actor."""
        self.on(self.actor, name, *arguments)

    def on(self, actors: Any, name: str, *arguments: Any) -> None:
        """Fan out action *name* on each of *actors* (one actor or an iterable)."""
        if actors is None:
            return
        if isinstance(actors, set | frozenset):
            raise InvalidInputError(
                "step.on needs an ordered collection (list or tuple): a set's order is not "
                "stable, and child ids derive from fan-out order"
            )
        many = isinstance(actors, (list | tuple, Iterator))
        targets = list(actors) if many else [actors]
        canonical_json(list(arguments))
        for actor in targets:
            if actor is None:
                continue
            if self._validate is not None:
                self._validate(actor, name)
            self.children.append(ChildIntent(actor=actor, name=name, arguments=tuple(arguments)))

    def wait(self, seconds: float) -> None:
        """Wait *seconds* (a durable timer) before the step can complete."""
        self.waits.append(_seconds(seconds))

    def fail(self, reason: str = "step marked failed") -> None:
        """Mark the step failed without raising; children already fanned out are dropped."""
        self.failure = reason

    @property
    def failed(self) -> bool:
        return self.failure is not None


@define
class BeforeHandle:
    """What a before hook receives: it may replace ``arguments``, ``cancel()`` the action
    or ``complete()`` it; either of the latter creates no records."""

    name: str
    actor: Any
    arguments: list[Any]
    short_circuit: ActionStatus | None = None

    def cancel(self) -> None:
        """End the action as cancelled before it exists."""
        self.short_circuit = ActionStatus.CANCELLED

    def complete(self, status: str | ActionStatus = ActionStatus.SUCCEEDED) -> None:
        """End the action with *status* (default succeeded) before it exists."""
        value = ActionStatus(status)
        if value not in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED):
            raise InvalidInputError(f"before hooks cannot complete as {value.value!r}")
        self.short_circuit = value


@define
class JobHandle:
    """What a job receives: the action, its actor and arguments; ``complete()`` ends the
    action once the job returns (a job that does not complete leaves it waiting for an
    outside completion)."""

    action_id: str
    name: str
    actor: Any
    arguments: tuple[Any, ...]
    attempt: int
    completion: tuple[ActionStatus, Any] | None = None

    def complete(
        self, status: str | ActionStatus = ActionStatus.SUCCEEDED, payload: Any = None
    ) -> None:
        value = ActionStatus(status)
        if value not in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED):
            raise InvalidInputError(f"jobs cannot complete as {value.value!r}")
        canonical_json(payload)
        self.completion = (value, payload)
