"""Deterministic simulation of your workflows under crashes, races and clock faults.

- :class:`Simulation`, :class:`Workload`, :class:`Root` -- run a workload under seeded
  faults (:class:`Faults`); :meth:`Simulation.check` raises :class:`SimulationFailure`
  with the seed and the shortest failing prefix.
- :func:`current_context` -- a step body's view of the simulated run (re-runs).
- :func:`random_workload` -- random action trees, for the engine's own suite.
- :func:`seeds_from_env` -- ``STEPKERNEL_SEED=<n>`` replays one seed.

See docs/simulation.md.
"""

from stepkernel.testing.simulation.faults import CRASH_POINTS, FAULT_KINDS, Faults
from stepkernel.testing.simulation.ledger import Ledger, LedgerReport
from stepkernel.testing.simulation.simulator import (
    SEED_VARIABLE,
    Root,
    SimContext,
    Simulation,
    SimulationFailure,
    SimulationResult,
    Workload,
    current_context,
    seeds_from_env,
)
from stepkernel.testing.simulation.workload import Node, random_workload

__all__ = [
    "CRASH_POINTS",
    "FAULT_KINDS",
    "SEED_VARIABLE",
    "Faults",
    "Ledger",
    "LedgerReport",
    "Node",
    "Root",
    "SimContext",
    "Simulation",
    "SimulationFailure",
    "SimulationResult",
    "Workload",
    "current_context",
    "random_workload",
    "seeds_from_env",
]
