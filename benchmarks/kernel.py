"""Kernel-alone throughput: every ``decide`` call of a recorded W1 + W2 run, on one
core -- no store, no user code, no runtime, no view building.

The recorded history is folded once to capture each call the runtime would make: the
first view it loads for an event and, whenever the kernel raises
``MissingRecordsError``, the larger view it decides again on.  The timed loop then
repeats exactly those calls, failed ones included.  Records the kernel writes are sealed
lazily (their digests are computed when a store commits them), so hashing is not in
this figure; ``replay_events_per_s`` is the full verification instead: views built and
every digest computed and compared, as :func:`stepkernel.domain.replay.replay` does.
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


Call = tuple[View, Any, float]


def decide_calls(entries: list[Entry]) -> tuple[list[Call], list[tuple[str, Call]]]:
    """Every ``decide`` call the runtime would make for *entries* (with the views it
    would pass), and per event its final call labelled with the kind of event."""
    state: dict[RecordKey, Record] = {}
    calls: list[Call] = []
    final: list[tuple[str, Call]] = []
    for entry in entries:
        view = first_view(entry.event, state)
        while True:
            call = (View(records=dict(view)), entry.event, entry.now)
            calls.append(call)
            try:
                decision = decide(*call)
                break
            except MissingRecordsError as need:
                view.update({k: state.get(k) for k in need.keys})
        final.append((_kind(entry.event, view), call))
        for tomb in decision.deletes:
            state.pop(tomb.key, None)
        for record in decision.writes:
            state[key_of(record)] = record
    return calls, final


def _time_calls(calls: list[Call]) -> float:
    start = time.process_time()
    for view, event, now in calls:
        try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
            decide(view, event, now)
        except MissingRecordsError:
            pass
    return time.process_time() - start


def by_kind(final: list[tuple[str, Call]], repeat: int = 5) -> dict[str, tuple[int, float]]:
    """Per kind of event: how many, and microseconds of ``decide`` each (CPU time)."""
    samples: dict[str, list[Call]] = defaultdict(list)
    for kind, call in final:
        samples[kind].append(call)
    out = {}
    for kind, items in samples.items():
        seconds = min(_time_calls(items) for _ in range(repeat))
        out[kind] = (len(items), seconds / len(items) * 1e6)
    return out


def host_calibration(repeat: int = 7) -> float:
    """Milliseconds of CPU a fixed pure-Python loop takes here (the best of *repeat*):
    a yardstick for comparing runs made on different days or hosts (the same code
    measured 20% apart on this shared machine on two days)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        table: dict[int, int] = {}
        total = 0
        for i in range(1_000_000):
            total += i
            table[i & 1023] = total
        best = min(best, time.process_time() - start)
    return best * 1e3


def measure(repeat: int = 7) -> dict[str, Any]:
    """The median of *repeat* timings of every ``decide`` call, in events per CPU second;
    the same for a verifying replay; and the per-kind costs."""
    entries = record_entries()
    calls, final = decide_calls(entries)
    kernel = sorted(len(entries) / _time_calls(calls) for _ in range(repeat))
    replays = []
    for _ in range(repeat):
        start = time.process_time()
        replay(entries)
        replays.append(len(entries) / (time.process_time() - start))
    replays.sort()
    return {
        "events": float(len(entries)),
        "calls": float(len(calls)),
        "events_per_s": kernel[len(kernel) // 2],
        "replay_events_per_s": replays[len(replays) // 2],
        "by_kind": by_kind(final),
        "calibration_ms": host_calibration(),
    }


if __name__ == "__main__":
    result = measure()
    print(
        f"{result['events_per_s']:,.0f} events/s over {result['events']:.0f} events "
        f"({result['calls']:.0f} decide calls); verifying replay "
        f"{result['replay_events_per_s']:,.0f} events/s"
    )
    print(f"host calibration: {result['calibration_ms']:.0f} ms (fixed pure-Python loop)")
    for kind, (count, micros) in result["by_kind"].items():
        print(f"  {kind:32s} {count:5d} x {micros:6.1f} us")
