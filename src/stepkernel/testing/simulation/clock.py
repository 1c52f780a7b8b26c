"""The simulated clock: a reference time that only the simulator moves, plus faults.

``true`` is the simulation's monotonic time.  The store reads :meth:`SimClock.now`:
``true`` plus an *offset* that clock faults move (a step of an hour forward or back,
drift that accumulates as time passes).  The store's clock is the reference for timers
and leases; a worker may additionally be skewed (see :mod:`.store`).
"""

from __future__ import annotations

from stepkernel.ports.clock import Clock

START = 1_700_000_000.0


class SimClock(Clock):
    """Moves only when the simulator says so; ``sleep`` advances it."""

    def __init__(self, start: float = START) -> None:
        self.true = start
        self.offset = 0.0
        self.drift = 0.0  # extra seconds of offset per simulated second

    def now(self) -> float:
        return self.true + self.offset

    def tick(self, seconds: float) -> None:
        """Let *seconds* of reference time pass (drift accumulates meanwhile)."""
        if seconds < 0:
            raise ValueError("time only moves forward; use step() for clock faults")
        self.true += seconds
        self.offset += self.drift * seconds

    def step(self, seconds: float) -> None:
        """A clock fault: the store's clock jumps by *seconds* (may be negative)."""
        self.offset += seconds

    def advance_to(self, when: float) -> None:
        """Let time pass until the store's clock reads at least *when*."""
        gap = when - self.now()
        if gap > 0:
            self.tick(gap / (1.0 + self.drift) if self.drift > -1.0 else gap)
            if self.now() < when:  # rounding
                self.tick(when - self.now())

    def heal(self) -> None:
        """Stop drifting (a jump already taken stays: clocks are not rewound)."""
        self.drift = 0.0

    def sleep(self, seconds: float) -> None:
        self.tick(max(0.0, seconds))
