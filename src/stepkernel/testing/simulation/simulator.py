"""The deterministic simulator: one seed drives workers, faults, clock and workload.

A :class:`Simulation` runs a :class:`Workload` (your registry and the roots to submit)
on the in-memory store with 1 to 4 simulated workers, single-threaded: the scheduler
picks, from one seeded ``random.Random``, what happens next -- a worker leases and
handles messages, a root is submitted, time passes, an outbound action is completed --
and at every port boundary a worker may crash or stall while other workers run (that
nesting is how deliveries race).  Nothing reads the wall clock, ``uuid4`` or set order,
so a seed replays exactly: same seed, same trace hash.

Each run has two phases.  The *safety* phase injects the faults of :class:`Faults`
and checks the invariants after every commit (:mod:`stepkernel.testing.invariants`).
The *liveness* phase heals everything, advances time past every deadline, delivers every
intended completion, and requires every root to finish within a bounded number of
transitions.  Then the ledger (:mod:`.ledger`) must show nothing lost, duplicated or
unexpected, and each step body must have run at least once for an applied outcome and at
most once plus the number of faults that hit its attempts.

:meth:`Simulation.check` runs many seeds; a failing seed is re-run with shorter safety
phases to find the shortest failing prefix, and :class:`SimulationFailure` names the
seed so that ``STEPKERNEL_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from stepkernel.runtime.policy import RetryPolicy
from stepkernel.testing.simulation.faults import Faults
from stepkernel.testing.simulation.model import (
    SEED_VARIABLE,
    Root,
    SimContext,
    SimulationFailure,
    SimulationResult,
    Workload,
    current_context,
    seeds_from_env,
)
from stepkernel.testing.simulation.run import _Run


class Simulation:
    """Runs *workload* (a :class:`Workload`, or a function of the seed's
    ``random.Random`` that builds one) under seeded faults.

    *workers* is the range of simulated workers (drawn per seed), *faults* a
    :class:`Faults` or a function drawing one per seed (default: swarm), *steps* the
    range of safety-phase scheduler steps, *lease_seconds* the workers' lease.
    """

    def __init__(
        self,
        workload: Workload | Callable[[random.Random], Workload],
        *,
        workers: tuple[int, int] = (1, 4),
        faults: Faults | Callable[[random.Random], Faults] = Faults.swarm,
        steps: tuple[int, int] = (40, 200),
        lease_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not 1 <= workers[0] <= workers[1]:
            raise ValueError("workers must be a range (low, high) with 1 <= low <= high")
        self.workload = workload
        self.workers = workers
        self.faults = faults
        self.steps = steps
        self.lease_seconds = lease_seconds
        self.retry = retry or RetryPolicy(attempts=3, initial_delay=1.0, jitter=0.5)

    def run(self, seed: int, *, prefix: int | None = None) -> SimulationResult:
        """Run one seed (with the safety phase cut to *prefix* steps, if given)."""
        return _Run(self, seed, prefix).execute()

    def check(self, seeds: Iterable[int], *, shrink: bool = True) -> list[SimulationResult]:
        """Run every seed; on the first failure raise :class:`SimulationFailure` with
        the shortest failing prefix (when *shrink*).  Returns the results otherwise."""
        results = []
        for seed in seeds:
            result = self.run(seed)
            if not result.ok:
                raise SimulationFailure(
                    result, self.shortest_prefix(result) if shrink else result.safety_steps
                )
            results.append(result)
        return results

    def shortest_prefix(self, failed: SimulationResult) -> int:
        """The fewest safety steps with which *failed*'s seed still fails (bisection)."""
        low, high = 0, failed.safety_steps
        while low < high:
            middle = (low + high) // 2
            if self.run(failed.seed, prefix=middle).ok:
                low = middle + 1
            else:
                high = middle
        return high


__all__: Sequence[str] = (
    "SEED_VARIABLE",
    "Root",
    "SimContext",
    "Simulation",
    "SimulationFailure",
    "SimulationResult",
    "Workload",
    "current_context",
    "seeds_from_env",
)
