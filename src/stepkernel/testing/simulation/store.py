"""The simulated store: the in-memory store, invariant-checked, behind fault hooks.

:class:`SimStore` is what the simulated workers' engine talks to.  Every port call made
by a worker passes through :meth:`Hooks.checkpoint` before and after it, where the
simulator may crash the worker (raise :class:`~stepkernel.testing.faults.SimulatedCrash`)
or stall it while other workers run.  Leased batches go through :meth:`Hooks.batch`
(duplicated, dropped, reordered); ``now()`` adds the calling worker's skew.  Calls made
by the environment (submitting roots, completing outbound actions, the checkers) are
never faulted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from stepkernel.domain.records import Record, RecordKey
from stepkernel.ports.store import Commit, Delivery
from stepkernel.testing.invariants import CheckedStore
from stepkernel.testing.proxy import StoreProxy


class Hooks(Protocol):
    """What the simulator decides at each port boundary of a worker."""

    def checkpoint(self, point: str) -> None:
        """Called at *point*; may raise ``SimulatedCrash`` or run other workers."""

    def skew(self) -> float:
        """Seconds the calling worker's clock is off from the store's (0 for the
        environment)."""

    def leased(self, deliveries: list[Delivery]) -> None:
        """The calling worker holds *deliveries* from now on (before any checkpoint)."""

    def batch(self, deliveries: list[Delivery]) -> list[Delivery]:
        """The leased *deliveries* as the worker will see them."""

    def committed(self, commit: Commit) -> None:
        """*commit* was applied (called before the ``after_commit`` checkpoint)."""


class SimStore(StoreProxy):
    """*checked* (a :class:`CheckedStore` over the in-memory store) behind *hooks*."""

    def __init__(self, checked: CheckedStore, hooks: Hooks) -> None:
        super().__init__(checked)
        self.hooks = hooks

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        self.hooks.checkpoint("before_load")
        loaded = self.inner.load(keys)
        self.hooks.checkpoint("after_load")
        return loaded

    def commit(self, commit: Commit) -> None:
        self.hooks.checkpoint("before_commit")
        self.inner.commit(commit)
        self.hooks.committed(commit)
        self.hooks.checkpoint("after_commit")

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        batch = self.inner.lease(worker=worker, limit=limit, lease_seconds=lease_seconds, ids=ids)
        self.hooks.leased(batch)
        if batch:
            self.hooks.checkpoint("after_lease")
        return self.hooks.batch(batch)

    def ack(self, ids: Iterable[str]) -> None:
        ids = tuple(ids)
        self.hooks.checkpoint("before_ack")
        self.inner.ack(ids)
        self.hooks.checkpoint("after_ack")

    def now(self) -> float:
        return self.inner.now() + self.hooks.skew()
