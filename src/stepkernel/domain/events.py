"""Events: facts the runtime feeds to :func:`stepkernel.domain.kernel.decide`.

Events are past tense and carry everything the kernel needs: user code has already run
(outside any transaction) and its outcome is recorded here.  Each event has a
deterministic ``event_id`` that ends up in the digest chain of the records it changes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from attrs import field, frozen

from stepkernel.domain.messages import Message
from stepkernel.domain.records import Dependent, ErrorInfo
from stepkernel.domain.status import ActionStatus


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


def _frozenset(value: Any) -> frozenset[Any]:
    return frozenset(value)


def _positive_or_none(_instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 seconds, got {value!r}")


@frozen
class ActionSpec:
    """A fully resolved action to submit: keys, checksum and timeout already computed by
    the runtime from the user's resolvers; ``arguments`` is canonical JSON text."""

    id: str
    name: str
    actor_type: str
    actor_key: str
    arguments: str
    step_names: tuple[str, ...] = field(converter=_tuple)
    concurrency_key: str
    checksum_key: str
    checksum: str | None = None
    outbound: bool = False
    timeout: float | None = field(default=None, validator=_positive_or_none)
    after: frozenset[ActionStatus] = field(default=frozenset(), converter=_frozenset)


@frozen
class ShortCircuit:
    """A child whose ``before`` hook completed or cancelled it: no records are created and
    the dependency settles at once with ``status``."""

    status: ActionStatus
    name: str = ""


ChildSpec = ActionSpec | ShortCircuit


@frozen
class RootSubmitted:
    """A root action was invoked (``spec.id`` is the root id)."""

    spec: ActionSpec

    @property
    def event_id(self) -> str:
        return f"submit:{self.spec.id}"


@frozen
class StepBodyRan:
    """The body of step ``step`` (attempt ``attempt``) of ``action_id`` returned.

    ``children`` are in fan-out order, ``waits`` are seconds; ``failed`` is set when the
    body marked the step failed or raised a handled exception.  ``completion`` carries a
    job's own completion of its action.
    """

    action_id: str
    step: int
    attempt: int
    children: tuple[ChildSpec, ...] = field(default=(), converter=_tuple)
    waits: tuple[float, ...] = field(default=(), converter=_tuple)
    failed: ErrorInfo | None = None
    completion: CompletionRequested | None = None

    @property
    def event_id(self) -> str:
        return f"body:{self.action_id}:{self.step}:{self.attempt}"


@frozen
class StepBodyRaised:
    """The body raised an unhandled exception; ``retry_at`` is when to try again (the
    runtime applied the retry policy and its jitter), ``None`` when attempts ran out."""

    action_id: str
    step: int
    attempt: int
    error: ErrorInfo
    retry_at: float | None = None

    @property
    def event_id(self) -> str:
        return f"raised:{self.action_id}:{self.step}:{self.attempt}"


@frozen
class MessageDelivered:
    """A queued settle/timeout/cancel message was delivered."""

    message: Message

    @property
    def event_id(self) -> str:
        return f"msg:{self.message.id}"


@frozen
class CallbacksRan:
    """The after callbacks of a finished action ran (``error`` set when one failed)."""

    action_id: str
    error: ErrorInfo | None = None

    @property
    def event_id(self) -> str:
        return f"after:{self.action_id}"


@frozen
class CompletionRequested:
    """An outbound action is completed from outside (webhook, job, tool answer)."""

    action_id: str
    completion_id: str
    status: ActionStatus = ActionStatus.SUCCEEDED
    payload: str | None = None

    @property
    def event_id(self) -> str:
        return f"complete:{self.action_id}:{self.completion_id}"


@frozen
class CancelRequested:
    """An action (and its descendants) is cancelled from outside."""

    action_id: str
    reason: str = "cancelled"

    @property
    def event_id(self) -> str:
        return f"cancel:{self.action_id}"


BodyOutcome = StepBodyRan | StepBodyRaised
"""What running one step body produced."""


def _distinct_actions(_instance: Any, _attribute: Any, value: tuple[BodyOutcome, ...]) -> None:
    if not value:
        raise ValueError("StepBodiesRan needs at least one outcome")
    for item in value:
        if not isinstance(item, StepBodyRan | StepBodyRaised):
            raise TypeError(f"StepBodiesRan holds body outcomes, not {type(item).__name__}")
    if len({item.action_id for item in value}) != len(value):
        raise ValueError("StepBodiesRan holds at most one outcome per action")


@frozen
class StepBodiesRan:
    """Several step bodies ran (one per action), committed together: a group commit.

    The kernel applies ``outcomes`` in order within one decision, each seeing what the
    ones before it changed, exactly as if each were decided and committed on its own in
    that order -- except that a record they all touch (the parent step of sibling
    children) is written once instead of once per outcome.  Each record written is
    sealed with the id of the outcome that changed it last, so the digest chain still
    names the body outcome behind every version.
    """

    outcomes: tuple[BodyOutcome, ...] = field(converter=_tuple, validator=_distinct_actions)

    @property
    def event_id(self) -> str:
        """The first member's id and how many follow, plus a digest of every member's id
        (two groups differ in id as soon as they differ in a member)."""
        first = self.outcomes[0].event_id
        if len(self.outcomes) == 1:
            return first
        members = "|".join(item.event_id for item in self.outcomes)
        tag = hashlib.sha256(members.encode()).hexdigest()[:12]
        return f"group:{first}+{len(self.outcomes) - 1}:{tag}"


Event = (
    RootSubmitted
    | StepBodyRan
    | StepBodyRaised
    | StepBodiesRan
    | MessageDelivered
    | CallbacksRan
    | CompletionRequested
    | CancelRequested
)

__all__ = [
    "ActionSpec",
    "BodyOutcome",
    "CallbacksRan",
    "CancelRequested",
    "ChildSpec",
    "CompletionRequested",
    "Dependent",
    "Event",
    "MessageDelivered",
    "RootSubmitted",
    "ShortCircuit",
    "StepBodiesRan",
    "StepBodyRaised",
    "StepBodyRan",
]
