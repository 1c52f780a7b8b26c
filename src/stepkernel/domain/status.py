"""Statuses of actions and steps, and the triggers that move them."""

from __future__ import annotations

from enum import StrEnum


class ActionStatus(StrEnum):
    """Where an action is in its lifecycle (see :mod:`stepkernel.domain.lifecycle`)."""

    PENDING = "pending"
    PERFORMING = "performing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    TIMED_OUT = "timed_out"
    DEADLOCKED = "deadlocked"

    @property
    def terminal(self) -> bool:
        return self not in (ActionStatus.PENDING, ActionStatus.PERFORMING)

    def __str__(self) -> str:
        return self.value


class StepStatus(StrEnum):
    """Where a step is: pending (body not applied yet), performing (waiting on its
    dependencies), succeeded or failed."""

    PENDING = "pending"
    PERFORMING = "performing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (StepStatus.SUCCEEDED, StepStatus.FAILED)

    def __str__(self) -> str:
        return self.value


class ActionTrigger(StrEnum):
    """Inputs that move an action."""

    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"
    SUPERSEDE = "supersede"
    TIME_OUT = "time_out"
    DEADLOCK = "deadlock"


class StepTrigger(StrEnum):
    """Inputs that move a step."""

    BODY_RAN = "body_ran"
    SUCCEED = "succeed"
    FAIL = "fail"


#: Statuses that callbacks may be attached to (``"all"`` expands to these).
CALLBACK_STATUSES = (
    ActionStatus.SUCCEEDED,
    ActionStatus.FAILED,
    ActionStatus.CANCELLED,
    ActionStatus.TIMED_OUT,
)
