"""The clock port: time is an input, read in one place."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod


class Clock(ABC):
    """Seconds since the epoch, as a float.  Stores decide timers and leases by their
    clock; the kernel never reads one (it receives ``now`` as a value)."""

    @abstractmethod
    def now(self) -> float:
        """The current time."""

    def sleep(self, seconds: float) -> None:
        """Wait *seconds* of this clock's time (a fake clock just advances)."""
        time.sleep(seconds)


class SystemClock(Clock):
    """Wall-clock time (``time.time``)."""

    def now(self) -> float:
        return time.time()
