"""A fake clock that only moves when told, and never backwards."""

from __future__ import annotations

import threading

from stepkernel.ports.clock import Clock


class FakeClock(Clock):
    """Starts at *start* (seconds since the epoch); ``advance``/``advance_to`` move it.
    ``sleep`` advances instead of blocking."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a FakeClock never moves backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def advance_to(self, when: float) -> float:
        with self._lock:
            self._now = max(self._now, when)
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
