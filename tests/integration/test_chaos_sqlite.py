"""Real-process chaos on SQLite: 4 worker processes on one database file, a random one
killed with SIGKILL every 2 s under a load of 500 roots; after healing every root is
finished and the ledgers show nothing lost, duplicated or unexpected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chaos import Chaos

SECONDS = float(os.environ.get("STEPKERNEL_CHAOS_SECONDS", "60"))

pytestmark = pytest.mark.integration


def test_sigkilled_workers_lose_nothing_on_sqlite(tmp_path: Path) -> None:
    """SIGKILL every 2 s for the chaos period, then heal: zero lost, duplicated or
    unexpected completions, by the test's own ledgers."""
    chaos = Chaos(
        url=f"sqlite:///{tmp_path / 'chaos.db'}", ledger=tmp_path / "ledger", seconds=SECONDS
    )
    verdict = chaos.run()
    print(verdict.summary())
    assert verdict.kills >= int(SECONDS / 2) - 1
    assert not verdict.lost, verdict.summary()
    assert not verdict.duplicated, verdict.summary()
    assert not verdict.unexpected, verdict.summary()
    assert sum(verdict.finished.values()) == verdict.submitted == 500
