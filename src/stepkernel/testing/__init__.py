"""Public test support for your own workflows.

- :class:`FakeClock`, :func:`memory_app`, :func:`drain`, :func:`complete_outbound`,
  :func:`waiting_outbound`, :func:`handle_exceptions`, :func:`invoked`,
  :func:`assert_invoked` -- run and check workflows on the in-memory store.
- :class:`FaultyStore`, :class:`SimulatedCrash` -- crash workers at port boundaries and
  duplicate deliveries (:mod:`stepkernel.testing.faults`).
- :func:`record_history`, :func:`save_history`, :func:`load_history`, :func:`replay` --
  golden histories (:mod:`stepkernel.testing.history`).
- :mod:`stepkernel.testing.simulation` -- the deterministic simulator: your workflows
  under seeded crashes, races, clock faults and odd completions (docs/simulation.md);
  :mod:`stepkernel.testing.invariants` -- the checkers it runs after every commit.
- :mod:`stepkernel.testing.contract` -- the store contract suite (needs pytest);
  :mod:`stepkernel.testing.strategies` -- Hypothesis strategies (needs hypothesis).
"""

from stepkernel.testing.clock import FakeClock
from stepkernel.testing.faults import FaultyStore, SimulatedCrash
from stepkernel.testing.harness import (
    assert_invoked,
    complete_outbound,
    drain,
    handle_exceptions,
    invoked,
    memory_app,
    waiting_outbound,
)
from stepkernel.testing.history import load_history, record_history, replay, save_history

__all__ = [
    "FakeClock",
    "FaultyStore",
    "SimulatedCrash",
    "assert_invoked",
    "complete_outbound",
    "drain",
    "handle_exceptions",
    "invoked",
    "load_history",
    "memory_app",
    "record_history",
    "replay",
    "save_history",
    "waiting_outbound",
]
