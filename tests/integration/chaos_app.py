"""The workload of the real-process chaos tests, and its ledger.

Worker processes load ``registry`` (``stepkernel worker --app chaos_app:registry``).  A
root fans out three ``work`` children on shared lanes, an outbound ``call_api`` child
(completed by the separate completer process, ``python chaos_app.py URL``) and a short
wait, then runs ``finalize``; an after callback reports how the root ended.

Every process appends what it does to its own file in ``$STEPKERNEL_CHAOS_LEDGER`` --
one ``os.write`` per line on an ``O_APPEND`` descriptor, so a line is either whole or
absent even when the process is killed with SIGKILL.  The test reads those files, never
the store, to decide whether work was lost, duplicated or unexpected.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from attrs import frozen

from stepkernel import Registry, StepkernelError, open_app
from stepkernel.testing import waiting_outbound

_OPEN: dict[str, int] = {}  # ledger file descriptor of this process, once opened


def record(line: str) -> None:
    """Append *line* to this process's ledger file (whole or not at all)."""
    directory = os.environ.get("STEPKERNEL_CHAOS_LEDGER")
    if not directory:
        return
    fd = _OPEN.get(directory)
    if fd is None:
        path = Path(directory) / f"{os.getpid()}.log"
        fd = _OPEN[directory] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{line}\n".encode())


@frozen
class Job:
    """The actor: one job per root."""

    id: int


registry = Registry()
registry.register_actor(Job, key=lambda job: job.id, load=lambda key: Job(int(key)))

root = registry.action(Job, "root")


@root.step
def fan(step: Any, job: Job) -> None:
    for index in range(3):
        step.do("work", index)
    step.do("call_api")
    step.wait(0.3)


@root.step
def finalize(step: Any, job: Job) -> None:
    record(f"final {step.action_id} {step.attempt}")


@registry.after(Job, "root", "all")
def report(action: Any, job: Job) -> None:
    record(f"finished {action.id} {action.status.value}")


def _lane(job: Job, index: int) -> str:
    return f"lane-{(job.id * 3 + index) % 17}"


work = registry.action(Job, "work", concurrency_key=_lane)


@work.step
def labour(step: Any, job: Job, index: int) -> None:
    record(f"body {step.action_id} {step.attempt}")
    time.sleep(random.uniform(0.02, 0.1))  # real work takes time: kills land mid-body


api = registry.action(Job, "call_api", outbound=True, timeout=60.0)


@api.step
def request(step: Any, job: Job) -> None:
    record(f"api {step.action_id}")


def complete_forever(url: str, *, poll: float = 0.1) -> None:
    """The outside world: answer every outbound call that waits (until killed)."""
    app = open_app(registry, url)
    while True:
        try:
            for action in waiting_outbound(app):
                assert action.id is not None
                try:
                    app.complete(action.id, "succeeded", completion_id=f"done:{action.id}")
                    record(f"complete {action.id}")
                except StepkernelError as exc:
                    record(f"refused {action.id} {type(exc).__name__}")
        except StepkernelError as exc:  # the store is restarting: try again shortly
            record(f"completer-error {type(exc).__name__}")
        time.sleep(poll)


if __name__ == "__main__":
    complete_forever(sys.argv[1])
