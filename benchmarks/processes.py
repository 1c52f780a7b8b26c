"""W1 and W2 with worker *processes* on a server store (PostgreSQL, Redis, or SQLite).

``python benchmarks/processes.py URL`` starts 2 ``stepkernel worker`` processes on URL
(``--concurrency 2`` each), submits the roots from this process as fast as it can, and
waits until every root finished.  Reports steps/s (W1), children/s (W2), the server's
transactions or commands per step (PostgreSQL: ``xact_commit`` of the database, every
transaction including reads; Redis: every command the server counted), and p50/p99
latency from a root's submission to its finish (under saturation: all roots are queued
at once, so latency includes waiting behind the others).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workloads import FANOUT, Node, build_registry
from stepkernel import App
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.store import ActionQuery, WorkflowStore
from stepkernel.wiring import open_store

ROOT = Path(__file__).resolve().parent.parent
_UNFINISHED = frozenset({ActionStatus.PENDING, ActionStatus.PERFORMING})


def server_counter(url: str, store: WorkflowStore) -> int | None:
    """Transactions (PostgreSQL) or commands (Redis) the server has counted so far."""
    if url.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            value = conn.exec_driver_sql(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).scalar()
        engine.dispose()
        return int(value or 0)
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url)
        stats = client.info("commandstats")
        client.close()
        return sum(int(v["calls"]) for v in stats.values())
    return None


def run(url: str, workload: str, *, roots: int, processes: int = 2) -> dict[str, Any]:
    """One measurement of *workload* with *processes* worker processes on *url*."""
    store = open_store(url)
    app = App(build_registry(), store)
    command = [
        sys.executable,
        "-m",
        "stepkernel.cli",
        "worker",
        "--db",
        url,
        "--app",
        "benchmarks.workloads:registry",
        "--concurrency",
        "2",
    ]
    workers = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    try:
        for worker in workers:  # wait until each worker printed its banner
            assert worker.stdout is not None
            worker.stdout.readline()
        name = "three_steps" if workload == "W1" else "fan_out"
        offset = time.monotonic_ns() % 10**9 * 1000
        before = server_counter(url, store)
        ids = []
        for i in range(roots):
            action = app.invoke_later(Node(offset + i), name)
            assert action.id is not None
            ids.append(action.id)
        deadline = time.monotonic() + 600
        while store.find_actions(ActionQuery(statuses=_UNFINISHED, limit=1)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workload} on {url} did not finish")
            time.sleep(0.05)
        after = server_counter(url, store)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    records = [app.get(i) for i in ids]
    failed = [r for r in records if r.status is not ActionStatus.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} roots did not succeed")
    created = [r.created_at or 0.0 for r in records]
    done = [r.finished_at or 0.0 for r in records]
    elapsed = max(done) - min(created)
    latencies = sorted(d - c for c, d in zip(created, done, strict=True))
    steps = roots * 3 if workload == "W1" else roots * (2 + FANOUT)
    result: dict[str, Any] = {
        "steps_per_s": steps / elapsed,
        "seconds": elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "roots": roots,
    }
    if workload == "W2":
        result["children_per_s"] = roots * FANOUT / elapsed
    if before is not None and after is not None:
        result["server_ops_per_step"] = (after - before) / steps
    store.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; median kept")
    args = parser.parse_args(argv)
    for workload, roots in (("W1", 1000), ("W2", 100)):
        runs = sorted(
            (
                run(
                    args.url,
                    workload,
                    roots=max(1, int(roots * args.scale)),
                    processes=args.processes,
                )
                for _ in range(args.repeat)
            ),
            key=lambda r: r["steps_per_s"],
        )
        median = runs[len(runs) // 2]
        print(workload, {k: round(v, 2) if isinstance(v, float) else v for k, v in median.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
