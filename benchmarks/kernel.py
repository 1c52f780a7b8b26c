"""Kernel-alone throughput: replay a W1 + W2 run's committed history through ``decide``
on one core -- no store, no user code, no runtime.

Replaying folds each committed event over an in-memory dict of records, asking the
kernel again whenever it needs a record it was not given (exactly what the runtime does),
and checks every digest; the time is almost all ``decide``.  ``by_kind`` also times
``decide`` alone per kind of event, on the views the replay built.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from benchmarks.workloads import Node, build_registry
from stepkernel.domain.errors import MissingRecordsError
from stepkernel.domain.kernel import decide
from stepkernel.domain.records import ActionRecord, Record, RecordKey, key_of
from stepkernel.domain.replay import Entry, first_view, replay
from stepkernel.domain.view import View
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


def _kind(event: Any, view: dict[RecordKey, Record | None]) -> str:
    name = type(event).__name__
    if name != "StepBodyRan":
        return name
    if event.children:
        return f"step body fanning out {len(event.children)}"
    record = view.get(("action", event.action_id))
    if isinstance(record, ActionRecord) and event.step == len(record.step_names) - 1:
        return "last step, settling a parent" if record.parent else "last step of a root"
    return "middle step"


def by_kind(entries: list[Entry], repeat: int = 5) -> dict[str, tuple[int, float]]:
    """Per kind of event: how many, and microseconds of ``decide`` each (CPU time)."""
    state: dict[RecordKey, Record] = {}
    samples: dict[str, list[tuple[View, Any, float]]] = defaultdict(list)
    for entry in entries:
        view = first_view(entry.event, state)
        while True:
            try:
                decision = decide(View(records=view), entry.event, entry.now)
                break
            except MissingRecordsError as need:
                view.update({k: state.get(k) for k in need.keys})
        samples[_kind(entry.event, view)].append((View(records=view), entry.event, entry.now))
        for tomb in decision.deletes:
            state.pop(tomb.key, None)
        for record in decision.writes:
            state[key_of(record)] = record
    out = {}
    for kind, items in samples.items():
        start = time.process_time()
        for _ in range(repeat):
            for view_, event, now in items:
                decide(view_, event, now)
        out[kind] = (len(items), (time.process_time() - start) / (repeat * len(items)) * 1e6)
    return out


def measure(repeat: int = 5) -> dict[str, Any]:
    """Best of *repeat* replays, in events per CPU second, and the per-kind costs."""
    entries = record_entries()
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        replay(entries)
        best = max(best, len(entries) / (time.process_time() - start))
    return {"events": float(len(entries)), "events_per_s": best, "by_kind": by_kind(entries)}


if __name__ == "__main__":
    result = measure()
    print(f"{result['events_per_s']:,.0f} events/s over {result['events']:.0f} events")
    for kind, (count, micros) in result["by_kind"].items():
        print(f"  {kind:32s} {count:5d} x {micros:6.1f} us")
