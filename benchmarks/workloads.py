"""The benchmark workloads, defined once with the public API.

W1: roots with 3 sequential trivial steps.  W2: roots whose first step fans out 20
trivial children, then a final step.
"""

from __future__ import annotations

from typing import Any

from stepkernel import Registry

FANOUT = 20


class Node:
    """A trivial actor: its key is its id and loading it back is free."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id


def _noop(step: Any, node: Node, *args: Any) -> None:
    return None


def _fan_out(step: Any, node: Node, *args: Any) -> None:
    step.on([Node(node.id * 1000 + i) for i in range(FANOUT)], "leaf")


def build_registry() -> Registry:
    """W1 (``three_steps``) and W2 (``fan_out`` with ``leaf`` children)."""
    registry = Registry()
    registry.register_actor(Node, name="Node", key=lambda n: n.id, load=lambda k: Node(int(k)))
    w1 = registry.action(Node, "three_steps")
    for name in ("first", "second", "third"):
        w1.step(name=name)(_noop)
    w2 = registry.action(Node, "fan_out")
    w2.step(name="fan")(_fan_out)
    w2.step(name="final")(_noop)
    registry.action(Node, "leaf", steps=[_noop])
    return registry


registry = build_registry()
"""The workloads' registry, for worker processes (``--app benchmarks.workloads:registry``)."""
