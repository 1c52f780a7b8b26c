"""Which faults a simulation injects, and how often.

:class:`Faults` holds one probability per fault kind.  :meth:`Faults.swarm` draws a
configuration from the seed the way swarm testing does: each kind is switched on or off
at random and given a random rate, so that some seeds hammer one kind of fault and
others mix several, which finds more bugs than every fault at a fixed low rate.
"""

from __future__ import annotations

import random

import attrs
from attrs import frozen

CRASH_POINTS: tuple[str, ...] = (
    "after_lease",
    "before_load",
    "after_load",
    "mid_body",
    "after_body",
    "before_commit",
    "after_commit",
    "before_ack",
    "after_ack",
)
"""Every boundary where a simulated worker can die.  ``after_commit`` is the *unknown
outcome*: the commit applied but the worker never heard."""

FAULT_KINDS: tuple[str, ...] = (
    "crash",
    "duplicate",
    "drop",
    "delay",
    "reorder",
    "hang",
    "retry_differently",
    "clock_drift",
    "clock_step",
    "skew",
    "early_completion",
    "duplicate_completion",
    "unknown_completion",
)
"""Every kind of fault (see :class:`Faults`)."""


@frozen
class Faults:
    """How often each fault happens.

    Most fields are probabilities per opportunity (a port boundary, a leased delivery,
    a body run, a scheduler step); ``retry_differently`` and the three completion faults
    are drawn at five times their value per opportunity (their opportunities are rare);
    ``clock_drift``, ``clock_step`` and ``skew`` only switch the fault on (the sizes are
    drawn per seed: drift of 1-5%, steps of an hour, skews of 2 or 20 seconds).

    - ``crash``: a worker dies at a port boundary (see :data:`CRASH_POINTS`);
    - ``duplicate``: a leased message is handed to the worker twice (and a submission
      is retried with its idempotency key);
    - ``drop``: a leased message is dropped (never handled, never acknowledged) until
      its lease expires and it is delivered again;
    - ``delay``: at a port boundary the worker stalls while other workers run (this is
      how deliveries interleave and race);
    - ``reorder``: a worker handles its leased batch in a shuffled order;
    - ``hang``: a step body hangs past its lease (another worker gets the message);
    - ``retry_differently``: a re-run body is asked to behave differently (bodies read
      :attr:`~stepkernel.testing.simulation.SimContext.differently`);
    - ``clock_drift``, ``clock_step``, ``skew``: the store's clock drifts, jumps an hour
      forward or back, or a worker's clock is skewed from it;
    - ``early_completion``, ``duplicate_completion``, ``unknown_completion``: outside
      completions that arrive before the action waits, twice, or for no action.
    """

    crash: float = 0.0
    duplicate: float = 0.0
    drop: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    hang: float = 0.0
    retry_differently: float = 0.0
    clock_drift: float = 0.0
    clock_step: float = 0.0
    skew: float = 0.0
    early_completion: float = 0.0
    duplicate_completion: float = 0.0
    unknown_completion: float = 0.0

    @classmethod
    def none(cls) -> Faults:
        """No faults at all (a baseline run)."""
        return cls()

    @classmethod
    def swarm(cls, rng: random.Random) -> Faults:
        """A random mix: each kind on with probability 1/2, at a random rate."""
        rates = (0.02, 0.05, 0.1, 0.2)
        values = {}
        for kind in FAULT_KINDS:
            values[kind] = rng.choice(rates) if rng.random() < 0.5 else 0.0
        return cls(**values)

    def scaled(self, factor: float) -> Faults:
        """Every probability times *factor* (capped at 1)."""
        return attrs.evolve(self, **{k: min(1.0, getattr(self, k) * factor) for k in FAULT_KINDS})

    @property
    def active(self) -> tuple[str, ...]:
        """The kinds switched on."""
        return tuple(k for k in FAULT_KINDS if getattr(self, k) > 0)
