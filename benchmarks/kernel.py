"""Kernel-alone throughput: replay the exact (view, event, now) inputs of a W1 + W2 run
through ``decide`` on one core, with no store and no user code."""

from __future__ import annotations

import time
from typing import Any

import stepkernel.runtime.engine as engine_module
from benchmarks.workloads import Node, build_registry
from stepkernel.domain.kernel import decide
from stepkernel.testing import drain, memory_app


def record_inputs(w1_roots: int = 300, w2_roots: int = 30) -> list[tuple[Any, Any, float]]:
    """Run W1 and W2 on the in-memory app and capture every ``decide`` call's inputs."""
    captured: list[tuple[Any, Any, float]] = []

    def capturing(view: Any, event: Any, now: float) -> Any:
        captured.append((view, event, now))
        return decide(view, event, now)

    app = memory_app(build_registry())
    original = engine_module.decide
    engine_module.decide = capturing
    try:
        for i in range(w1_roots):
            app.invoke_later(Node(i), "three_steps")
        for i in range(w2_roots):
            app.invoke_later(Node(10_000 + i), "fan_out")
        drain(app)
    finally:
        engine_module.decide = original
    return captured


def measure(repeat: int = 5) -> dict[str, float]:
    inputs = record_inputs()
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        for view, event, now in inputs:
            try:
                decide(view, event, now)
            except Exception:
                continue
        elapsed = time.process_time() - start
        best = max(best, len(inputs) / elapsed)
    return {"events": float(len(inputs)), "events_per_s": best}


if __name__ == "__main__":
    print(measure())
