"""Retry policy: frozen, validated on construction."""

from __future__ import annotations

import random

from attrs import field, frozen, validators


def _non_negative(_instance: object, attribute: object, value: float) -> None:
    if value < 0:
        raise ValueError(f"{getattr(attribute, 'name', '?')} must be >= 0, got {value!r}")


@frozen
class RetryPolicy:
    """How an unhandled exception in user code is retried.

    ``attempts`` counts every run, the first included (``attempts=1`` never retries).
    The delay before retry *n* (1-based) is ``initial_delay * multiplier ** (n - 1)``,
    capped at ``max_delay``, then spread by ``jitter`` (a fraction: 0.1 means +-10%).
    """

    attempts: int = field(default=5, validator=validators.ge(1))
    initial_delay: float = field(default=1.0, validator=_non_negative)
    multiplier: float = field(default=2.0, validator=validators.ge(1.0))
    max_delay: float = field(default=300.0, validator=_non_negative)
    jitter: float = field(default=0.1, validator=[validators.ge(0.0), validators.le(1.0)])

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number *retry* (1 = first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        base = min(self.initial_delay * self.multiplier ** (retry - 1), self.max_delay)
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1.0 + spread))

    def gives_up_after(self, attempt: int) -> bool:
        """True when run number *attempt* (0-based) was the last one allowed."""
        return attempt + 1 >= self.attempts


NO_RETRY = RetryPolicy(attempts=1, initial_delay=0.0, jitter=0.0)
