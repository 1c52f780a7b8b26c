"""W1 and W2 with worker *processes* on a server store (PostgreSQL, Redis, or SQLite).

``python benchmarks/processes.py URL`` submits the roots, then starts 2 ``stepkernel
worker`` processes on URL (``--concurrency 2`` each) and waits until every root
finished.  Reports steps/s (W1), children/s (W2) and the server's transactions or
commands per step (PostgreSQL: ``xact_commit + xact_rollback`` of the database, every
transaction including reads; Redis: ``total_commands_processed``, every command including those
the Lua scripts run, and idle workers' polling).  Latency is a
separate run below saturation: W1 roots submitted at 100/s while the workers run,
p50/p99 from a root's submission to its finish.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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


def server_counter(url: str) -> int | None:
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

        client = redis.Redis.from_url(url.split("?", 1)[0])
        stats = client.info("stats")  # every command, those inside Lua scripts included
        client.close()
        return int(stats["total_commands_processed"])
    return None


def _workers(url: str, processes: int) -> list[subprocess.Popen[bytes]]:
    """Start *processes* worker processes and wait until each is leasing; each one's
    stderr goes to a temporary file, shown if it exits early (see :func:`_wait_done`)."""
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
        subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=tempfile.TemporaryFile(),  # noqa: SIM115 - closed with the process
        )
        for _ in range(processes)
    ]
    for worker in workers:  # wait until each worker printed its banner: it is leasing
        assert worker.stdout is not None
        worker.stdout.readline()
    return workers


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout=30)


def _stderr_tail(worker: subprocess.Popen[bytes], lines: int = 20) -> str:
    stream = worker.stderr
    if stream is None:
        return ""
    stream.seek(0)
    return "\n".join(stream.read().decode(errors="replace").splitlines()[-lines:])


def _wait_done(
    store: WorkflowStore, what: str, workers: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """Wait until nothing is pending or performing; raise if it takes ten minutes or a
    worker process exits meanwhile (with the end of its stderr), instead of waiting
    for work that nobody does."""
    deadline = time.monotonic() + 600
    while store.find_actions(ActionQuery(statuses=_UNFINISHED, limit=1)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not finish")
        for worker in workers:
            if worker.poll() is not None:
                raise RuntimeError(
                    f"{what}: a worker exited with {worker.returncode}:\n{_stderr_tail(worker)}"
                )
        time.sleep(0.1)  # polling is not free: each poll is a query on the server under test


def run(url: str, workload: str, *, roots: int, processes: int = 2) -> dict[str, Any]:
    """Throughput: *roots* roots of *workload* submitted first, then *processes* worker
    processes started; time runs from when every worker is leasing to the last finish."""
    store = open_store(url)
    app = App(build_registry(), store)
    name = "three_steps" if workload == "W1" else "fan_out"
    offset = time.monotonic_ns() % 10**9 * 1000
    ids = []
    for i in range(roots):
        action = app.invoke_later(Node(offset + i), name)
        assert action.id is not None
        ids.append(action.id)
    before = server_counter(url)
    workers = _workers(url, processes)
    start = time.time()
    try:
        _wait_done(store, f"{workload} on {url}", workers)
    finally:
        _stop(workers)
    # Only now: PostgreSQL backends publish their transaction counts at most once a
    # second while busy, and at the latest when they exit.
    after = server_counter(url)
    records = [app.get(i) for i in ids]
    failed = [r for r in records if r.status is not ActionStatus.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} roots did not succeed")
    elapsed = max(r.finished_at or 0.0 for r in records) - start
    steps = roots * 3 if workload == "W1" else roots * (2 + FANOUT)
    result: dict[str, Any] = {"steps_per_s": steps / elapsed, "seconds": elapsed, "roots": roots}
    if workload == "W2":
        result["children_per_s"] = roots * FANOUT / elapsed
    if before is not None and after is not None:
        result["server_ops_per_step"] = (after - before) / steps
    store.close()
    return result


def latency(
    url: str, *, roots: int = 200, rate: float = 100.0, processes: int = 2
) -> dict[str, float]:
    """p50/p99 seconds from submitting a W1 root to its finish, with the workers running
    and roots submitted at *rate* per second (below saturation)."""
    store = open_store(url)
    app = App(build_registry(), store)
    workers = _workers(url, processes)
    offset = time.monotonic_ns() % 10**9 * 1000 + 500_000
    ids = []
    try:
        begin = time.monotonic()
        for i in range(roots):
            pause = begin + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            action = app.invoke_later(Node(offset + i), "three_steps")
            assert action.id is not None
            ids.append(action.id)
        _wait_done(store, f"latency run on {url}", workers)
    finally:
        _stop(workers)
    records = [app.get(i) for i in ids]
    spans = sorted((r.finished_at or 0.0) - (r.created_at or 0.0) for r in records)
    store.close()
    return {
        "p50_ms": statistics.median(spans) * 1000,
        "p99_ms": spans[min(len(spans) - 1, int(len(spans) * 0.99))] * 1000,
    }


SERVER_TARGETS = {
    "postgresql": (1_800, 1_900),
    "redis": (1_500, 1_200),
}
"""Issue 4's targets per server: (W1 steps/s, W2 children/s) with 2 worker processes."""


def bench_url(name: str) -> str | None:
    """A fresh store URL for server *name* (``postgresql``: the ``stepkernel_bench``
    database, re-created; ``redis``: a ``bench`` prefix, emptied), or ``None`` when the
    server does not answer."""
    try:
        if name == "postgresql":
            import sqlalchemy

            admin = sqlalchemy.create_engine(
                "postgresql+psycopg://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.exec_driver_sql("DROP DATABASE IF EXISTS stepkernel_bench WITH (FORCE)")
                conn.exec_driver_sql("CREATE DATABASE stepkernel_bench")
            admin.dispose()
            return "postgresql+psycopg://postgres@127.0.0.1:5432/stepkernel_bench"
        if name == "redis":
            import redis

            client = redis.Redis(host="127.0.0.1", port=6379, db=0)
            keys = list(client.scan_iter(match="{bench}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
            return "redis://127.0.0.1:6379/0?prefix=bench"
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")
        return None
    raise ValueError(f"unknown server {name!r}")


def report(rows: list[dict[str, Any]]) -> str:
    """The Markdown section for ``docs/benchmarks.md``."""
    if not rows:
        return ""
    lines = [
        "",
        "## Servers, with 2 worker processes",
        "",
        "`make bench` also runs `benchmarks/processes.py` on the local PostgreSQL and Redis:",
        "the roots are submitted first, then 2 `stepkernel worker` processes",
        "(`--concurrency 2` each) run them; time runs from when both workers lease to the",
        "last finish (median of 3), with the worker's default group commit.  *Server",
        "ops/step* is PostgreSQL's transactions (reads included) or Redis's commands",
        "(those inside the Lua scripts included) per step.",
        "Latency: W1 roots submitted at 100/s while the workers run, submit to finish.",
        "",
        "| store | W1 steps/s | W2 children/s | ops/step W1 | ops/step W2 | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        w1, w2, lat = row["W1"], row["W2"], row["latency"]
        lines.append(
            f"| {row['store']} | {w1['steps_per_s']:,.0f} | {w2['children_per_s']:,.0f} | "
            f"{w1.get('server_ops_per_step', 0):.2f} | {w2.get('server_ops_per_step', 0):.2f} | "
            f"{lat['p50_ms']:.1f} | {lat['p99_ms']:.1f} |"
        )
    lines += ["", "| target (issue 4) | wanted | measured | met |", "|---|---:|---:|---|"]
    for row in rows:
        w1_target, w2_target = SERVER_TARGETS[row["store"]]
        for label, wanted, value in (
            ("W1 steps/s", w1_target, row["W1"]["steps_per_s"]),
            ("W2 children/s", w2_target, row["W2"]["children_per_s"]),
        ):
            met = "yes" if value >= wanted else "no"
            lines.append(f"| {row['store']} {label} | {wanted:,} | {value:,.0f} | {met} |")
    lines.append("")
    return "\n".join(lines)


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
    print("latency (W1, 100 roots/s)", {k: round(v, 1) for k, v in latency(args.url).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
