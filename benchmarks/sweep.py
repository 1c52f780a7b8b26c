"""The recovery sweep's cost against the history kept (SQLite).

Every worker runs the sweep every ``recover_every`` seconds, so it must cost what is in
flight, not what has finished.  :func:`measure` runs *finished* one-step roots to the end on a
SQLite store and times one ``App.recover()`` (CPU), beside reading every
finished action -- what the sweep did before it asked only for the finished actions
still owing callbacks.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from benchmarks.workloads import Node, build_registry
from stepkernel import App
from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.store import ActionQuery

FINISHED = frozenset(
    {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.CANCELLED, ActionStatus.TIMED_OUT}
)


def _cpu_ms(call: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return best * 1e3


def measure(finished: int = 3000, repeat: int = 3) -> dict[str, float]:
    """CPU milliseconds of one sweep and of one read of every finished action, over a
    store holding *finished* finished roots (best of *repeat*)."""
    with tempfile.TemporaryDirectory() as directory:
        store = SqlWorkflowStore(sqlite_engine(os.path.join(directory, "sweep.db")))
        app = App(build_registry(), store)
        for i in range(finished):
            app.invoke_later(Node(i), "leaf")
        app.run_pending()
        assert app.recover() == 0
        sweep = _cpu_ms(app.recover, repeat)
        read_all = _cpu_ms(lambda: store.find_actions(ActionQuery(statuses=FINISHED)), repeat)
        store.close()
    return {"finished": float(finished), "sweep_ms": sweep, "read_all_ms": read_all}


if __name__ == "__main__":
    result = measure()
    print(
        f"recovery sweep over {result['finished']:.0f} finished actions: "
        f"{result['sweep_ms']:.1f} ms CPU (reading every finished action: "
        f"{result['read_all_ms']:.1f} ms)"
    )
