"""A scenario's world: one fresh app on a checked, recording in-memory store.

A :data:`Scenario` builds a :class:`World` once per schedule, submits its roots,
declares its outside events (:class:`OutsideEvent`) with :meth:`World.event` and sets
its final :data:`Check`.  Under the app, :class:`_RacingStore` runs a duplicate
delivery's worker at the moment the original is about to write (see
:func:`stepkernel.testing.schedules.execution.execute`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable

from attrs import frozen

from stepkernel.domain.records import ActionRecord, Record, RecordKey
from stepkernel.ports.store import Commit
from stepkernel.runtime.app import App
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.registry import Registry
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.invariants import CheckedStore, Invariants
from stepkernel.testing.schedules.footprints import RecordingRandom, RecordingStore

Check = Callable[[], "str | None"]
"""A scenario's final check: asserts, and may return an outcome label (counted in
:attr:`Exploration.outcomes`, so a test can require that every outcome was reached)."""


class _RacingStore(CheckedStore):
    """A :class:`CheckedStore` that, when armed, runs the armed handler (a duplicate's
    worker) just before the next write (``commit`` or ``ack``), then disarms."""

    _armed: Callable[[], object] | None = None

    def arm(self, racer: Callable[[], object]) -> None:
        self._armed = racer

    def race(self) -> None:
        racer, self._armed = self._armed, None
        if racer is not None:
            racer()

    def commit(self, commit: Commit) -> None:
        self.race()
        super().commit(commit)

    def ack(self, ids: Iterable[str]) -> None:
        self.race()
        super().ack(ids)


@frozen
class OutsideEvent:
    """Something that happens from outside at a moment the schedule chooses."""

    name: str
    fire: Callable[[], object]


class World:
    """One fresh run of a scenario: an :class:`App` on a checked in-memory store with a
    :class:`FakeClock`, the scenario's outside events and its final check.

    ``app`` is what the scenario submits to and completes through; ``store`` is the
    in-memory store underneath (a backdoor: ``all_records()``, ``queued()``);
    ``invariants`` collects every violation found; ``start`` is the clock's start.  Ids
    are sequential (``r1``, ``r2``...) and retry jitter is seeded, so a world replays
    exactly.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 60.0,
        start: float = 1_700_000_000.0,
    ) -> None:
        self.start = start
        self.clock = FakeClock(start)
        self.store = RecordingStore(clock=self.clock)
        self.invariants = Invariants()
        self._racing = _RacingStore(self.store, self.invariants)
        counter = itertools.count(1)
        self.app = App(
            registry,
            self._racing,
            retry=retry,
            new_id=lambda: f"r{next(counter)}",
            rng=RecordingRandom(0, self.store),
            lease_seconds=lease_seconds,
        )
        self.events: list[OutsideEvent] = []
        self.check: Check | None = None

    def event(self, name: str, fire: Callable[[], object]) -> None:
        """Declare the outside event *name*: each schedule fires it exactly once, at
        every possible moment.  *fire* may assert (a failure fails the schedule)."""
        if any(e.name == name for e in self.events):
            raise ValueError(f"event {name!r} is declared twice")
        self.events.append(OutsideEvent(name, fire))

    def records(self) -> dict[RecordKey, Record]:
        """Every stored record (a snapshot)."""
        return self.store.all_records()

    def actions(self) -> dict[str, ActionRecord]:
        """Every stored action record by id."""
        return {r.id: r for r in self.records().values() if isinstance(r, ActionRecord)}

    def fingerprint(self) -> str:
        """A digest of the state: the clock, every record's key, version and digest
        chain, and every queued message."""
        parts = sorted(f"{k[0]}:{k[1]}@{r.version}:{r.digest}" for k, r in self.records().items())
        parts += sorted(repr(m) for m in self.store.queued())
        parts.append(repr(self.clock.now()))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


Scenario = Callable[[], World]
"""Builds a fresh :class:`World` and submits its roots; called once per schedule."""
