"""A fault-injecting :class:`WorkflowStore` wrapper for crash simulation.

:class:`FaultyStore` delegates every call to an inner store and, at random (seeded) or
on request, raises :class:`SimulatedCrash` at a port boundary, the way a worker process
that dies at that instant would stop.  It can also hand the same :class:`Delivery` to
the caller twice in one leased batch (duplicate delivery).  The inner store is never
damaged: a crash only ever stops the *caller*; whatever the inner store did before the
crash point stays done, exactly as with a real database.

Crash points (the keys of :attr:`FaultyStore.hits`):

``before_load``
    ``load`` raises before reading anything: the worker died before it saw the state.
``before_commit``
    ``commit`` raises before applying: the transition is lost, the message stays leased
    and is delivered again once the lease runs out.
``after_commit``
    ``commit`` applies the commit atomically, *then* raises: the transition happened but
    the worker never learns it (outcome unknown to the worker).
``before_ack`` / ``after_ack``
    the same two points around ``ack`` (used for stale and duplicate deliveries).
``before_lease``
    ``lease`` raises before leasing: nothing was handed out.
``after_lease``
    ``lease`` leases the messages in the inner store, then raises: the worker died
    holding leases, which simply expire.

Inspection calls (``queued``, ``find_actions``, ``next_due``, ``now``) and lease
maintenance (``release``, ``extend``) never crash.  :meth:`FaultyStore.heal` turns every
fault off; :meth:`FaultyStore.arm` forces a crash the next time a given point is hit.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence

from stepkernel.domain.records import Record, RecordKey
from stepkernel.ports.store import Commit, Delivery, WorkflowStore
from stepkernel.testing.proxy import StoreProxy

CRASH_POINTS: tuple[str, ...] = (
    "before_load",
    "before_commit",
    "after_commit",
    "before_ack",
    "after_ack",
    "before_lease",
    "after_lease",
)
"""Every point where :class:`FaultyStore` may raise :class:`SimulatedCrash`."""

DUPLICATE_DELIVERY = "duplicate_delivery"
"""The :attr:`FaultyStore.hits` key counting deliveries handed out twice."""


class SimulatedCrash(BaseException):
    """The simulated worker died at crash point ``point``.

    A ``BaseException`` (not ``Exception``) on purpose: the engine must not catch it and
    record it as a step failure; it has to unwind the worker like a real crash would.
    """

    def __init__(self, point: str) -> None:
        super().__init__(f"simulated crash {point}")
        self.point = point

    def __reduce__(self) -> tuple[type[SimulatedCrash], tuple[str]]:
        return (type(self), (self.point,))


class FaultyStore(StoreProxy):
    """Wraps *inner*, crashing at each crash point with probability *crash_rate* and
    handing out each leased delivery a second time with probability *duplicate_rate*.

    ``hits`` counts the crashes raised per crash point (plus ``duplicate_delivery``),
    so tests can check that every point was actually exercised.
    """

    def __init__(
        self,
        inner: WorkflowStore,
        *,
        rng: random.Random,
        crash_rate: float,
        duplicate_rate: float,
    ) -> None:
        if not 0.0 <= crash_rate <= 1.0 or not 0.0 <= duplicate_rate <= 1.0:
            raise ValueError("crash_rate and duplicate_rate must be within [0, 1]")
        super().__init__(inner)
        self.rng = rng
        self.crash_rate = crash_rate
        self.duplicate_rate = duplicate_rate
        self.hits: dict[str, int] = dict.fromkeys((*CRASH_POINTS, DUPLICATE_DELIVERY), 0)
        self._armed: set[str] = set()

    # -- fault control ---------------------------------------------------------------------

    def heal(self) -> None:
        """Turn every fault off (random crashes, duplicates and armed crash points)."""
        self.crash_rate = 0.0
        self.duplicate_rate = 0.0
        self._armed.clear()

    def arm(self, point: str) -> None:
        """Crash the next time *point* is reached, whatever the crash rate."""
        if point not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {point!r}; one of {CRASH_POINTS}")
        self._armed.add(point)

    def disarm(self) -> None:
        """Forget crash points armed with :meth:`arm` and not reached yet."""
        self._armed.clear()

    def _maybe_crash(self, point: str) -> None:
        if point in self._armed:
            self._armed.discard(point)
        elif not (self.crash_rate and self.rng.random() < self.crash_rate):
            return
        self.hits[point] += 1
        raise SimulatedCrash(point)

    # -- records ---------------------------------------------------------------------------

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        self._maybe_crash("before_load")
        return self.inner.load(keys)

    def commit(self, commit: Commit) -> None:
        self._maybe_crash("before_commit")
        self.inner.commit(commit)
        self._maybe_crash("after_commit")

    # -- queue -----------------------------------------------------------------------------

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        self._maybe_crash("before_lease")
        batch = self.inner.lease(worker=worker, limit=limit, lease_seconds=lease_seconds, ids=ids)
        self._maybe_crash("after_lease")
        out: list[Delivery] = []
        for delivery in batch:
            out.append(delivery)
            if self.duplicate_rate and self.rng.random() < self.duplicate_rate:
                self.hits[DUPLICATE_DELIVERY] += 1
                out.append(delivery)
        return out

    def ack(self, ids: Iterable[str]) -> None:
        self._maybe_crash("before_ack")
        self.inner.ack(ids)
        self._maybe_crash("after_ack")
