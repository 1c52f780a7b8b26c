"""Random workloads for the simulator: action trees drawn from a seed.

:func:`random_workload` builds a registry of 2 to 5 action kinds on a ``Node`` actor and
1 to 20 roots.  Kind ``a<i>`` only fans out kinds after it, so trees are at most 4
levels deep; a step fans out up to 5 children (``do`` on the same node or ``on`` another
node) and up to 2 timed waits.  Kinds draw a shared lane (or their default per-actor
lane), a checksum (so identical work is achieved or joined), outbound completion, a
timeout and after callbacks (some failing).  Bodies fail in the ways real ones do: raise
once, raise always, mark the step failed, or -- when the simulator asks through
:func:`~stepkernel.testing.simulation.current_context` -- fan out differently on a re-run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from attrs import frozen

from stepkernel.runtime.registry import Registry
from stepkernel.testing.simulation.simulator import Root, Workload, current_context

NODES = 3
FAIL_MODES = ("none", "none", "none", "none", "raise_once", "raise_always", "mark_failed")


@frozen
class Node:
    """The actor of random workloads: a node id."""

    id: int


@frozen
class _Child:
    kind: int
    offset: int  # 0: the same node (do), else another node (on)


@frozen
class _Step:
    children: tuple[_Child, ...]
    waits: tuple[float, ...]
    fail: str


def _body(shape: _Step) -> Callable[..., None]:
    def body(step: Any, node: Node) -> None:
        context = current_context()
        if shape.fail == "raise_always" or (shape.fail == "raise_once" and step.attempt == 0):
            raise RuntimeError(f"{shape.fail} (attempt {step.attempt})")
        if shape.fail == "mark_failed":
            step.fail("marked failed")
            return
        children = shape.children
        if context is not None and context.differently and children:
            children = children[:-1]  # a re-run that behaves differently
        for child in children:
            if child.offset == 0:
                step.do(f"a{child.kind}")
            else:
                step.on(Node((node.id + child.offset) % NODES), f"a{child.kind}")
        for seconds in shape.waits:
            step.wait(seconds)

    return body


def _node_id(node: Node) -> int:
    return node.id


def _lane(name: str) -> Callable[[Node], str]:
    return lambda _node: name


def _after_ok(_action: Any, _node: Node) -> None:
    return None


def _after_failing(_action: Any, _node: Node) -> None:
    raise RuntimeError("after callback failed")


def random_workload(rng: random.Random) -> Workload:
    """A workload drawn from *rng* (see the module docstring)."""
    registry = Registry()
    registry.register_actor(Node, key=lambda n: n.id, load=lambda key: Node(int(key)))
    kinds = rng.randint(2, 5)
    for kind in range(kinds):
        lane = rng.choice((None, None, "L0", "L1"))
        definition = registry.action(
            Node,
            f"a{kind}",
            concurrency_key=None if lane is None else _lane(lane),
            checksum=_node_id if rng.random() < 0.3 else None,
            outbound=rng.random() < 0.25,
            timeout=rng.choice((None, None, None, 5.0, 30.0, 120.0)),
        )
        for index in range(rng.randint(1, 3)):
            children: tuple[_Child, ...] = ()
            if kind + 1 < kinds and rng.random() < 0.6:
                children = tuple(
                    _Child(rng.randint(kind + 1, kinds - 1), rng.choice((0, 0, 1, 2)))
                    for _ in range(rng.randint(1, 5))
                )
            waits = tuple(
                float(rng.choice((1, 2, 5, 10))) for _ in range(rng.choice((0, 0, 0, 1, 2)))
            )
            shape = _Step(children, waits, rng.choice(FAIL_MODES))
            definition.step(name=f"s{index}")(_body(shape))
        if rng.random() < 0.2:
            definition.after("all")(_after_failing if rng.random() < 0.3 else _after_ok)
    roots = tuple(
        Root(Node(rng.randrange(NODES)), f"a{rng.randrange(kinds)}")
        for _ in range(rng.randint(1, 20))
    )
    answers = ("succeeded", "succeeded", "succeeded", "failed", "cancelled")
    pick = rng.random()

    def outbound(_action: Any) -> Any:
        # The same answer for every outbound action of this workload (deterministic).
        return answers[int(pick * len(answers))]

    return Workload(registry=registry, roots=roots, outbound=outbound)
