"""Kernel-alone throughput: replay a W1 + W2 run's committed history through ``decide``
on one core -- no store, no user code, no runtime.

Replaying folds each committed event over an in-memory dict of records, asking the
kernel again whenever it needs a record it was not given (exactly what the runtime does),
and checks every digest; the time is almost all ``decide``.
"""

from __future__ import annotations

import time

from benchmarks.workloads import Node, build_registry
from stepkernel.domain.replay import Entry, replay
from stepkernel.testing import drain, memory_app
from stepkernel.testing.history import record_history


def record_entries(w1_roots: int = 300, w2_roots: int = 30) -> list[Entry]:
    """Run W1 and W2 on the in-memory app and return what it committed, in order."""
    app = memory_app(build_registry())
    entries = record_history(app)
    for i in range(w1_roots):
        app.invoke_later(Node(i), "three_steps")
    for i in range(w2_roots):
        app.invoke_later(Node(10_000 + i), "fan_out")
    drain(app)
    return entries


def measure(repeat: int = 5) -> dict[str, float]:
    """Best of *repeat* replays, in events per CPU second."""
    entries = record_entries()
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        replay(entries)
        best = max(best, len(entries) / (time.process_time() - start))
    return {"events": float(len(entries)), "events_per_s": best}


if __name__ == "__main__":
    print(measure())
