"""Real-process chaos on PostgreSQL: 4 ``stepkernel worker`` processes on one database
under a load of 500 roots, (1) with a random worker killed with SIGKILL every 2 s, and
(2) with a random backend of theirs terminated by the server (``pg_terminate_backend``,
what a failover or an admin does) every 250 ms; after healing every root is finished
and the ledgers show nothing lost, duplicated or unexpected."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
import sqlalchemy
from chaos import Chaos, Verdict

from stepkernel.adapters.sql.schema import metadata

SECONDS = float(os.environ.get("STEPKERNEL_CHAOS_SECONDS", "60"))

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_postgres(postgres_url: str) -> str:
    """The session database with the store's tables dropped (each chaos run starts
    empty)."""
    admin = sqlalchemy.create_engine(postgres_url)
    metadata.drop_all(admin)
    admin.dispose()
    return postgres_url


def _clean(verdict: Verdict) -> None:
    print(verdict.summary())
    assert not verdict.lost, verdict.summary()
    assert not verdict.duplicated, verdict.summary()
    assert not verdict.unexpected, verdict.summary()
    assert sum(verdict.finished.values()) == verdict.submitted == 500


def test_sigkilled_workers_lose_nothing_on_postgres(fresh_postgres: str, tmp_path: Path) -> None:
    """SIGKILL a random worker every 2 s for the chaos period, then heal: zero lost,
    duplicated or unexpected completions, by the test's own ledgers."""
    verdict = Chaos(url=fresh_postgres, ledger=tmp_path / "ledger", seconds=SECONDS).run()
    assert verdict.kills >= int(SECONDS / 2) - 1
    _clean(verdict)


def test_terminated_backends_lose_nothing_on_postgres(fresh_postgres: str, tmp_path: Path) -> None:
    """Every 250 ms for the chaos period the server terminates a random backend of the
    workers, the completer or the submitter; then heal: nothing lost."""
    admin = sqlalchemy.create_engine(fresh_postgres, isolation_level="AUTOCOMMIT")
    rng = random.Random(7)
    terminated = 0
    last = time.monotonic()

    def terminate_a_backend() -> None:
        nonlocal terminated, last
        if time.monotonic() - last < 0.25:
            return
        last = time.monotonic()
        with admin.connect() as conn:
            pids = conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            ).scalars()
            candidates = sorted(pids)
            if candidates:
                conn.exec_driver_sql(f"SELECT pg_terminate_backend({rng.choice(candidates)})")
                terminated += 1

    chaos = Chaos(
        url=fresh_postgres,
        ledger=tmp_path / "ledger",
        seconds=SECONDS,
        kill_every=0.0,
        disturb=terminate_a_backend,
    )
    try:
        verdict = chaos.run()
    finally:
        admin.dispose()
    print(f"backends terminated: {terminated}")
    assert terminated >= int(SECONDS * 2)
    _clean(verdict)
