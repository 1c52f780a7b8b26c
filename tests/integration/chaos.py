"""The real-process chaos harness: worker processes killed with SIGKILL under load.

:class:`Chaos` starts ``workers`` ``stepkernel worker`` processes and the completer
process on one store URL, submits ``roots`` roots (recording each in its own ledger),
then for ``seconds`` seconds kills a random worker with SIGKILL every ``kill_every``
seconds and starts a new one in its place (``disturb`` is called on every tick too, for
server-side faults).  Then it heals -- no more kills -- and waits until the ledger shows
every root finished.  :meth:`Chaos.verdict` compares the ledgers: lost (submitted, never
finished), duplicated (finished with two different outcomes), unexpected (finished but
never submitted, or an outbound call completed that nobody made).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrs import define, field, frozen

HERE = Path(__file__).parent


@frozen
class Verdict:
    """What the ledgers say after healing."""

    submitted: int
    finished: Counter[str]
    lost: tuple[str, ...]
    duplicated: tuple[str, ...]
    unexpected: tuple[str, ...]
    kills: int
    body_reruns: int

    def summary(self) -> str:
        return (
            f"{self.submitted} roots, finished {dict(self.finished)}, kills {self.kills}, "
            f"body re-runs {self.body_reruns}; lost {len(self.lost)}, duplicated "
            f"{len(self.duplicated)}, unexpected {len(self.unexpected)}"
            + "".join(f"\n  lost {x}" for x in self.lost[:10])
            + "".join(f"\n  duplicated {x}" for x in self.duplicated[:10])
            + "".join(f"\n  unexpected {x}" for x in self.unexpected[:10])
        )


@define
class Chaos:
    """See the module docstring."""

    url: str
    ledger: Path
    workers: int = 4
    roots: int = 500
    seconds: float = 60.0
    kill_every: float = 2.0
    heal_timeout: float = 180.0
    lease_seconds: float = 3.0
    disturb: Callable[[], None] | None = None
    rng: random.Random = field(factory=lambda: random.Random(1))
    processes: list[subprocess.Popen[bytes]] = field(factory=list)
    completer: subprocess.Popen[bytes] | None = None
    kills: int = 0
    spawned: int = 0
    submitted: dict[str, str] = field(factory=dict)
    app: Any = None

    # -- processes ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, "STEPKERNEL_CHAOS_LEDGER": str(self.ledger)}

    def _spawn_worker(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "stepkernel.cli",
            "worker",
            "--db",
            self.url,
            "--app",
            "chaos_app:registry",
            "--concurrency",
            "2",
            "--lease-seconds",
            str(self.lease_seconds),
            "--recover-every",
            "5",
        ]
        self.spawned += 1  # one log file per worker process, never shared or truncated
        log = open(self.ledger / f"worker-{self.spawned}.out", "wb")  # noqa: SIM115
        return subprocess.Popen(command, cwd=HERE, env=self._env(), stdout=log, stderr=log)

    def start(self) -> None:
        self.ledger.mkdir(parents=True, exist_ok=True)
        self.processes = [self._spawn_worker() for _ in range(self.workers)]
        self.completer = subprocess.Popen(
            [sys.executable, "chaos_app.py", self.url],
            cwd=HERE,
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=open(self.ledger / "completer.err", "wb"),  # noqa: SIM115
        )

    def kill_one(self) -> None:
        """SIGKILL a random worker and start a new one in its place."""
        index = self.rng.randrange(len(self.processes))
        victim = self.processes[index]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.kills += 1
        self.processes[index] = self._spawn_worker()

    def stop(self) -> None:
        for process in [*self.processes, *([self.completer] if self.completer else [])]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in [*self.processes, *([self.completer] if self.completer else [])]:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- the run -----------------------------------------------------------------------------

    def submit(self, index: int) -> None:
        """Submit root *index* from this process, recording it in the test's ledger (a
        submission that meets a store outage is retried with the same idempotency key)."""
        from stepkernel import StepkernelError

        key = f"root-{index}"
        for _ in range(100):
            try:
                action = self._app().invoke_later(_job(index), "root", idempotency_key=key)
                break
            except StepkernelError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"could not submit {key}")
        assert action.id is not None
        self.submitted[action.id] = key
        with open(self.ledger / "submitted.log", "a") as out:
            out.write(f"submit {key} {action.id}\n")

    def _app(self) -> Any:
        if self.app is None:
            sys.path.insert(0, str(HERE))
            import chaos_app

            from stepkernel import open_app

            self.app = open_app(chaos_app.registry, self.url)
        return self.app

    def run(self) -> Verdict:
        """Load, chaos, healing (see the module docstring); the roots are submitted at a
        steady rate over the first 80% of the chaos period, so kills land under load."""
        self.start()
        try:
            begin = time.monotonic()
            end = begin + self.seconds
            spread = 0.8 * self.seconds
            next_kill = begin + self.kill_every
            sent = 0
            while time.monotonic() < end:
                due = min(self.roots, int(self.roots * (time.monotonic() - begin) / spread) + 1)
                while sent < due:
                    self.submit(sent)
                    sent += 1
                time.sleep(0.05)
                if self.disturb is not None:
                    self.disturb()
                if self.kill_every and time.monotonic() >= next_kill:
                    self.kill_one()
                    next_kill += self.kill_every
            while sent < self.roots:
                self.submit(sent)
                sent += 1
            self._heal()
        finally:
            self.stop()
            if self.app is not None:
                self.app.store.close()
        return self.verdict()

    def _heal(self) -> None:
        deadline = time.monotonic() + self.heal_timeout
        while time.monotonic() < deadline:
            if set(self.submitted) <= set(self._finished()):
                return
            for index, process in enumerate(self.processes):
                if process.poll() is not None:  # a worker that exited on its own
                    self.processes[index] = self._spawn_worker()
            time.sleep(0.5)

    # -- the ledgers -------------------------------------------------------------------------

    def _lines(self) -> list[list[str]]:
        lines: list[list[str]] = []
        for path in sorted(self.ledger.glob("*.log")):
            if path.name == "submitted.log":
                continue
            lines.extend(line.split() for line in path.read_text().splitlines() if line)
        return lines

    def _finished(self) -> dict[str, set[str]]:
        finished: dict[str, set[str]] = defaultdict(set)
        for parts in self._lines():
            if parts[0] == "finished":
                finished[parts[1]].add(parts[2])
        return finished

    def verdict(self) -> Verdict:
        finished = self._finished()
        lines = self._lines()
        api_calls = {parts[1] for parts in lines if parts[0] == "api"}
        bodies = Counter((parts[1], parts[2]) for parts in lines if parts[0] == "body")
        lost = tuple(f"{key} ({rid})" for rid, key in self.submitted.items() if rid not in finished)
        duplicated = tuple(
            f"{rid} finished as {sorted(statuses)}"
            for rid, statuses in finished.items()
            if len(statuses) > 1
        )
        unexpected = [
            f"{rid} finished, never submitted" for rid in finished if rid not in self.submitted
        ]
        unexpected += [
            f"outbound {parts[1]} completed, never called"
            for parts in lines
            if parts[0] == "complete" and parts[1] not in api_calls
        ]
        outcome: Counter[str] = Counter(
            next(iter(statuses)) for statuses in finished.values() if len(statuses) == 1
        )
        return Verdict(
            submitted=len(self.submitted),
            finished=outcome,
            lost=lost,
            duplicated=duplicated,
            unexpected=tuple(unexpected),
            kills=self.kills,
            body_reruns=sum(n - 1 for n in bodies.values()),
        )


def _job(index: int) -> Any:
    import chaos_app

    return chaos_app.Job(index)
