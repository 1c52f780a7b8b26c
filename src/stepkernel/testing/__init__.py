"""Public test support: a fake clock, an in-memory app, draining, outbound completion,
exception scopes and assertions, plus the store contract suite
(:mod:`stepkernel.testing.contract`)."""

from stepkernel.testing.clock import FakeClock
from stepkernel.testing.harness import (
    assert_invoked,
    complete_outbound,
    drain,
    handle_exceptions,
    invoked,
    memory_app,
    waiting_outbound,
)

__all__ = [
    "FakeClock",
    "assert_invoked",
    "complete_outbound",
    "drain",
    "handle_exceptions",
    "invoked",
    "memory_app",
    "waiting_outbound",
]
