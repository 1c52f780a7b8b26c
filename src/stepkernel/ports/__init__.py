"""Ports: the small interfaces the runtime drives and adapters implement."""

from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.codec import ArgumentCodec, JsonCodec
from stepkernel.ports.store import ActionQuery, Commit, DeadLetter, Delivery, WorkflowStore

__all__ = [
    "ActionQuery",
    "ArgumentCodec",
    "Clock",
    "Commit",
    "DeadLetter",
    "Delivery",
    "JsonCodec",
    "SystemClock",
    "WorkflowStore",
]
