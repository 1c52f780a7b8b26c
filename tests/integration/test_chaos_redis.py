"""Real-process chaos on Redis (a private server with ``appendonly yes`` and
``appendfsync always``): SIGKILLed workers, and the Redis server itself killed and
restarted under load; after healing every root finished, by the test's own ledgers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos import Chaos, Verdict
from servers import PrivateRedis

SECONDS = float(os.environ.get("STEPKERNEL_CHAOS_SECONDS", "60"))
ALWAYS_FSYNC = ("--appendonly", "yes", "--appendfsync", "always")

pytestmark = pytest.mark.integration


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private redis-server that fsyncs every write (killed at the end)."""
    server = PrivateRedis(tmp_path / "redis", *ALWAYS_FSYNC).start()
    yield server
    server.crash()


def _clean(verdict: Verdict) -> None:
    print(verdict.summary())
    assert not verdict.lost, verdict.summary()
    assert not verdict.duplicated, verdict.summary()
    assert not verdict.unexpected, verdict.summary()
    assert sum(verdict.finished.values()) == verdict.submitted == 500


def test_sigkilled_workers_lose_nothing_on_redis(
    durable_redis: PrivateRedis, tmp_path: Path
) -> None:
    """SIGKILL a random worker every 2 s for the chaos period, then heal: zero lost,
    duplicated or unexpected completions."""
    chaos = Chaos(url=durable_redis.url, ledger=tmp_path / "ledger", seconds=SECONDS)
    verdict = chaos.run()
    assert verdict.kills >= int(SECONDS / 2) - 1
    _clean(verdict)


def test_redis_killed_and_restarted_under_load_loses_nothing(
    durable_redis: PrivateRedis, tmp_path: Path
) -> None:
    """The Redis server is SIGKILLed and restarted from its append-only file twice
    while the workers run (and a worker is SIGKILLed every 2 s): nothing is lost."""
    restarts: list[float] = []
    started = time.monotonic()

    def disturb() -> None:
        elapsed = time.monotonic() - started
        if len(restarts) < 2 and elapsed > (len(restarts) + 1) * SECONDS / 3:
            durable_redis.crash()
            time.sleep(0.5)
            durable_redis.start()
            restarts.append(elapsed)

    chaos = Chaos(
        url=durable_redis.url, ledger=tmp_path / "ledger", seconds=SECONDS, disturb=disturb
    )
    verdict = chaos.run()
    assert len(restarts) == 2
    _clean(verdict)
