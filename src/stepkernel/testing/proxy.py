"""A store that forwards every call to another: the base of the testing wrappers.

:class:`StoreProxy` implements the whole :class:`~stepkernel.ports.store.WorkflowStore`
port by delegating to ``inner``; a wrapper overrides only the calls it changes (the
fault injectors crash around some of them, :class:`~stepkernel.testing.invariants.
CheckedStore` checks commits) and everything else reaches the real store untouched.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, Record, RecordKey
from stepkernel.ports.store import ActionQuery, Commit, Delivery, WorkflowStore


class StoreProxy(WorkflowStore):
    """Forwards every port call to *inner* (and uses its clock)."""

    def __init__(self, inner: WorkflowStore) -> None:
        self.inner = inner
        self.clock = inner.clock

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        return self.inner.load(keys)

    def commit(self, commit: Commit) -> None:
        self.inner.commit(commit)

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        return self.inner.lease(worker=worker, limit=limit, lease_seconds=lease_seconds, ids=ids)

    def ack(self, ids: Iterable[str]) -> None:
        self.inner.ack(ids)

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        self.inner.release(ids, worker=worker)

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        self.inner.extend(ids, worker=worker, lease_seconds=lease_seconds)

    def next_due(self) -> float | None:
        return self.inner.next_due()

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        return self.inner.queued(action_id=action_id)

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        return self.inner.find_actions(query)

    def now(self) -> float:
        return self.inner.now()

    def wait_for_work(self, timeout: float) -> None:
        self.inner.wait_for_work(timeout)

    def close(self) -> None:
        self.inner.close()
