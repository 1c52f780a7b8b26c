"""The simulated worker processes of a run: who they are, what they hold, and when a
crashed one comes back (see :mod:`stepkernel.testing.simulation.run`)."""

from __future__ import annotations

from stepkernel.domain.messages import MessageKind
from stepkernel.ports.store import Delivery
from stepkernel.testing.simulation.ledger import BodyKey

__all__ = ["SimWorker", "run_key"]


class SimWorker:
    """One simulated worker process: its index, clock skew, whether it is alive (and
    when a crashed one restarts, under a new incarnation), the run message in hand and
    the run messages leased but not handled yet."""

    __slots__ = ("alive", "holding", "incarnation", "index", "restart_at", "running", "skew")

    def __init__(self, index: int, skew: float) -> None:
        self.index = index
        self.skew = skew
        self.alive = True
        self.incarnation = 1
        self.restart_at = 0.0
        self.running: BodyKey | None = None
        self.holding: list[BodyKey] = []  # run messages leased and not handled yet

    @property
    def name(self) -> str:
        return f"w{self.index}.{self.incarnation}"


def run_key(delivery: Delivery) -> BodyKey | None:
    """The body a run message asks for (action, step, attempt); ``None`` for others."""
    message = delivery.message
    if message.kind is MessageKind.RUN:
        return (message.action_id, message.step, message.attempt)
    return None
