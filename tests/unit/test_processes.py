"""Several worker processes on one SQLite file, and clean shutdown on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepkernel import ActionStatus, App
from stepkernel.ports.store import ActionQuery

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys
from benchmarks.workloads import build_registry
from stepkernel import App
from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine
app = App(build_registry(), SqlWorkflowStore(sqlite_engine(sys.argv[1])))
worker = app.worker(threads=2, poll=0.01, lease_seconds=30)
worker.run_forever(ready=lambda: print("ready", flush=True))
print("stopped", flush=True)
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _app(path: Path) -> App:
    from benchmarks.workloads import build_registry

    from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine

    return App(build_registry(), SqlWorkflowStore(sqlite_engine(path)))


def _spawn(path: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def test_two_worker_processes_share_one_sqlite_file_and_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    """Two worker processes on one SQLite file finish every root (each step applied
    once), then exit 0 on SIGTERM leaving no message leased."""
    sys.path.insert(0, str(ROOT))
    path = tmp_path / "shared.db"
    app = _app(path)
    from benchmarks.workloads import Node

    roots = [app.invoke_later(Node(i), "three_steps").id for i in range(60)]
    roots += [app.invoke_later(Node(5000 + i), "fan_out").id for i in range(6)]
    workers = [_spawn(path), _spawn(path)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            unfinished = app.store.find_actions(
                ActionQuery(statuses=frozenset({ActionStatus.PENDING, ActionStatus.PERFORMING}))
            )
            if not unfinished and app.store.next_due() is None:
                break
            time.sleep(0.05)
        for process in workers:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=30) for process in workers]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    for process, (out, err) in zip(workers, outputs, strict=True):
        assert process.returncode == 0, err
        assert "stopped" in out
    for root in roots:
        assert root is not None
        action = app.get(root)
        assert action.status is ActionStatus.SUCCEEDED
        assert all(step.attempt == 0 for step in action.steps)
    assert len(app.store.find_actions(ActionQuery())) == 60 + 6 + 6 * 20
    assert app.store.queued() == []
