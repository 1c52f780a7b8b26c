"""Builders, hooks and fixtures of the store contract suite (see :mod:`stepkernel.testing.contract`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from stepkernel.domain.encoding import seal
from stepkernel.domain.errors import ConflictError
from stepkernel.domain.messages import Message, MessageKind
from stepkernel.domain.records import (
    AchievementRecord,
    ActionRecord,
    LaneRecord,
    Record,
    RecordKey,
)
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import Commit, WorkflowStore
from stepkernel.testing.clock import FakeClock

__all__ = [
    "LEASE",
    "ContractBase",
    "achievement",
    "action",
    "bump",
    "conflict_of",
    "increment",
    "lane",
    "queued_message",
]

LEASE = 30.0
"""Lease length (seconds) the queue tests use."""


# -- record builders ---------------------------------------------------------------------


def achievement(key: str, *, checksum: str = "sum-1", action_id: str = "a1") -> Record:
    """Version 1 of an achievement record, sealed."""
    record = AchievementRecord(key=key, checksum=checksum, action_id=action_id)
    return seal(record, version=1, prev_digest="", event_id="e1")


def lane(key: str, *, holder: str | None = None) -> Record:
    """Version 1 of a lane record, sealed."""
    return seal(LaneRecord(key=key, holder=holder), version=1, prev_digest="", event_id="e1")


def action(
    action_id: str,
    *,
    root_id: str | None = None,
    name: str = "deploy",
    actor_type: str = "Server",
    actor_key: str = "s1",
    status: ActionStatus = ActionStatus.PENDING,
    created_at: float = 0.0,
) -> Record:
    """Version 1 of a minimal action record (no steps started), sealed."""
    record = ActionRecord(
        id=action_id,
        root_id=root_id if root_id is not None else action_id,
        parent=None,
        name=name,
        actor_type=actor_type,
        actor_key=actor_key,
        arguments="[]",
        step_names=("first",),
        concurrency_key="",
        checksum_key="",
        status=status,
        created_at=created_at,
    )
    return seal(record, version=1, prev_digest="", event_id="e1")


def bump(record: Record, **changes: Any) -> Record:
    """The next version of *record* with *changes*, chained from its digest."""
    version = record.version + 1
    return seal(
        attrs.evolve(record, **changes),
        version=version,
        prev_digest=record.digest,
        event_id=f"e{version}",
    )


def conflict_of(error: ConflictError) -> tuple[RecordKey, int, int]:
    """The fields a :class:`ConflictError` carries: key, expected and actual version."""
    key = error.fields["key"]
    return (key[0], key[1]), error.fields["expected"], error.fields["actual"]


def queued_message(message_id: str, *, at: float, action_id: str = "a1") -> Message:
    """A run message, due at *at*, for the queue tests."""
    return Message(
        id=message_id, kind=MessageKind.RUN, action_id=action_id, step=0, available_at=at
    )


# -- the suite -----------------------------------------------------------------------------


class ContractBase:
    """Hooks and fixtures shared by the parts of the contract suite."""

    def make_store(self, clock: Clock) -> WorkflowStore:
        """A fresh, empty store that reads time from *clock*."""
        raise NotImplementedError("subclasses return the store under test")

    def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
        """Overwrite the stored bytes of record *key* with text that does not decode."""
        pytest.skip(f"{type(store).__name__} stores objects: nothing to corrupt")

    def corrupt_message(self, store: WorkflowStore, message_id: str, text: str) -> None:
        """Overwrite the stored text of queued message *message_id* with *text* (which
        does not decode), leaving its queue state (due time, lease) as it was."""
        pytest.skip(f"{type(store).__name__} stores messages as objects: nothing to corrupt")

    def dispose(self, store: WorkflowStore) -> None:
        """Release *store* after a test (default: :meth:`WorkflowStore.close`)."""
        store.close()

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The fake clock the store under test reads."""
        return FakeClock()

    @pytest.fixture
    def store(self, clock: FakeClock) -> Iterator[WorkflowStore]:
        """A fresh store on :meth:`clock`, disposed after the test."""
        store = self.make_store(clock)
        try:
            yield store
        finally:
            self.dispose(store)


def increment(store: WorkflowStore, key: RecordKey, times: int) -> None:
    """Add one to the achievement counter at *key* *times*, re-reading and retrying on
    every :class:`ConflictError` (what a runtime does): concurrent callers lose nothing."""
    for _ in range(times):
        while True:
            current = store.load([key])[key]
            assert isinstance(current, AchievementRecord)
            try:
                store.commit(
                    Commit(writes=[bump(current, checksum=str(int(current.checksum) + 1))])
                )
            except ConflictError:
                continue
            break
