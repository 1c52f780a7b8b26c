"""Where the integration tests find their servers, and what happens when one is missing.

Defaults are the local services (PostgreSQL with trust auth on 127.0.0.1:5432, Redis on
127.0.0.1:6379); ``STEPKERNEL_POSTGRES_URL`` / ``STEPKERNEL_REDIS_URL`` override them.
Without a server a test is skipped with the reason -- except under ``CI=true``, where a
missing server is a failure, never a silent skip (``.ci/run`` starts the servers).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

POSTGRES_URL = os.environ.get(
    "STEPKERNEL_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("STEPKERNEL_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(what: str, why: str) -> None:
    """Skip (locally) or fail (under CI=true) because *what* is not reachable."""
    message = f"{what} is not reachable ({why})"
    if under_ci():
        pytest.fail(f"{message}; CI=true requires it (.ci/run starts it)", pytrace=False)
    pytest.skip(f"{message}; start it or set the URL variable to run these tests")


def free_port(*, cluster: bool = False) -> int:
    """A TCP port nothing listens on right now; with *cluster*, one at most 55535 whose
    cluster bus port (``port + 10000``) is free too."""
    if not cluster:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 55535)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class PrivateRedis:
    """A ``redis-server`` of our own: ``start``, ``crash`` (SIGKILL, no shutdown save),
    ``start`` again on the same port and directory."""

    def __init__(self, directory: Path, *options: str, cluster: bool = False) -> None:
        if REDIS_SERVER is None:
            unavailable("redis-server", "no redis-server binary on PATH")
        assert REDIS_SERVER is not None
        self.binary = REDIS_SERVER
        self.directory = directory
        self.options = options
        self.port = free_port(cluster=cluster)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.directory), "--save", "", *self.options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    probe.ping()
                    return self
                except redis.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.02)
        finally:
            probe.close()

    def crash(self) -> None:
        """Kill the server at once: whatever it had not written to disk is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
