"""Read models handed to callers: :class:`Action` and :class:`Step` snapshots."""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from stepkernel.domain.records import ActionRecord, ErrorInfo, StepRecord
from stepkernel.domain.status import ActionStatus, StepStatus


@frozen
class Step:
    """A step as stored: name, status, dependencies and what settled."""

    index: int
    name: str
    status: StepStatus
    attempt: int
    dependencies: tuple[str, ...]
    settled: frozenset[str]
    failures: frozenset[str]
    error: ErrorInfo | None
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_record(cls, record: StepRecord) -> Step:
        return cls(
            index=record.index,
            name=record.name,
            status=record.status,
            attempt=record.attempt,
            dependencies=record.dependencies,
            settled=record.settled,
            failures=record.failures,
            error=record.error,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )


@frozen
class Action:
    """An action as seen from outside.

    ``id`` is ``None`` for an action satisfied without records (its ``before`` hook
    completed or cancelled it, or its checksum was already achieved); ``outcome`` says
    how an invocation was served (``created``, ``queued``, ``joined``, ``achieved``,
    ``exists``, ``short_circuited``...).
    """

    id: str | None
    name: str
    status: ActionStatus
    actor_type: str = ""
    actor_key: str = ""
    arguments: tuple[Any, ...] = ()
    root_id: str | None = None
    parent_id: str | None = None
    steps: tuple[Step, ...] = ()
    error: ErrorInfo | None = None
    output: Any = None
    outbound: bool = False
    awaiting_completion: bool = False
    superseded_by: str | None = None
    concurrency_key: str = ""
    checksum: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outcome: str = ""
    callbacks: str = "none"

    @property
    def finished(self) -> bool:
        return self.status.terminal

    @property
    def succeeded(self) -> bool:
        return self.status is ActionStatus.SUCCEEDED

    @classmethod
    def from_record(cls, record: ActionRecord, *, outcome: str = "") -> Action:
        return cls(
            id=record.id,
            name=record.name,
            status=record.status,
            actor_type=record.actor_type,
            actor_key=record.actor_key,
            arguments=tuple(json.loads(record.arguments)),
            root_id=record.root_id,
            parent_id=None if record.parent is None else record.parent.action_id,
            steps=tuple(Step.from_record(s) for s in record.steps),
            error=record.error,
            output=None if record.output is None else json.loads(record.output),
            outbound=record.outbound,
            awaiting_completion=record.awaiting_completion,
            superseded_by=record.superseded_by,
            concurrency_key=record.concurrency_key,
            checksum=record.checksum,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            outcome=outcome,
            callbacks=record.callbacks,
        )


@frozen
class ActionTree:
    """An action and its descendants (children created by its steps, recursively)."""

    action: Action
    children: tuple[ActionTree, ...] = ()

    def walk(self) -> list[Action]:
        """Every action in the tree, depth first."""
        out = [self.action]
        for child in self.children:
            out.extend(child.walk())
        return out
