"""What a simulation is given and what it gives back: the workload (:class:`Root`,
:class:`Workload`), what a step body may ask (:class:`SimContext`,
:func:`current_context`), and the outcome of a seed (:class:`SimulationResult`,
:class:`SimulationFailure`, :func:`seeds_from_env`)."""

from __future__ import annotations

import contextvars
import os
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from attrs import field, frozen

from stepkernel.runtime.registry import Registry
from stepkernel.runtime.snapshot import Action
from stepkernel.testing.invariants import Violation
from stepkernel.testing.simulation.ledger import LedgerReport

SEED_VARIABLE = "STEPKERNEL_SEED"
"""The environment variable that replays one seed (see :func:`seeds_from_env`)."""

OutboundAnswer = Callable[[Action], Any]


@frozen
class Root:
    """A root to submit: ``actor``, action ``name``, ``arguments`` and the idempotency
    ``key`` (defaults to ``root-<n>``; submissions are retried with the same key)."""

    actor: Any
    name: str
    arguments: tuple[Any, ...] = ()
    key: str | None = None


def _succeed(_action: Action) -> Any:
    return "succeeded"


@frozen
class Workload:
    """What to simulate: your ``registry``, the ``roots`` to submit, and ``outbound``,
    the completion each outbound action is meant to receive (``"succeeded"``, a status,
    a ``(status, payload)`` pair, or ``None`` to leave it to time out)."""

    registry: Registry
    roots: tuple[Root, ...]
    outbound: OutboundAnswer = _succeed
    handled: tuple[type[BaseException], ...] = ()


@frozen
class SimContext:
    """What a step body may ask about the simulated run it is in (see
    :func:`current_context`): which invocation of this (action, step, attempt) it is,
    and whether the simulator wants it to behave differently from the last one."""

    seed: int
    invocation: int
    differently: bool

    @property
    def rerun(self) -> bool:
        return self.invocation > 1


_CONTEXT: contextvars.ContextVar[SimContext | None] = contextvars.ContextVar(
    "stepkernel_simulation", default=None
)


def current_context() -> SimContext | None:
    """The :class:`SimContext` of the body being run by a simulation (else ``None``)."""
    return _CONTEXT.get()


@frozen
class SimulationResult:
    """One seed's run: its violations (empty when it passed), the ledger report, what
    it covered, its trace hash, and sizes."""

    seed: int
    faults: tuple[str, ...]
    workers: int
    safety_steps: int
    transitions: int
    violations: tuple[Violation, ...]
    ledger: LedgerReport
    coverage: Counter[str] = field(eq=False)
    trace_hash: str

    @property
    def ok(self) -> bool:
        return not self.violations and self.ledger.clean

    def describe(self) -> str:
        lines = [
            f"seed {self.seed}: {'ok' if self.ok else 'FAILED'} -- {self.workers} worker(s), "
            f"{self.safety_steps} safety steps, {self.transitions} transitions, "
            f"faults {', '.join(self.faults) or 'none'}",
        ]
        lines += [f"  {v}" for v in self.violations[:20]]
        if not self.ledger.clean:
            lines.append(f"  ledger: {self.ledger}")
        return "\n".join(lines)


class SimulationFailure(AssertionError):
    """A seed broke an invariant or the ledger.  ``prefix`` is the shortest safety
    phase (in scheduler steps) that still fails."""

    def __init__(self, result: SimulationResult, prefix: int) -> None:
        self.result = result
        self.seed = result.seed
        self.prefix = prefix
        super().__init__(
            f"{result.describe()}\n"
            f"shortest failing prefix: {prefix} of {result.safety_steps} safety steps\n"
            f"replay: {SEED_VARIABLE}={result.seed} pytest ..."
        )


def seeds_from_env(default: Iterable[int]) -> list[int]:
    """``[int($STEPKERNEL_SEED)]`` when the variable is set, else *default*."""
    value = os.environ.get(SEED_VARIABLE)
    return [int(value)] if value else list(default)
