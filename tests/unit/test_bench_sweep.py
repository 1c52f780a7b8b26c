"""The recovery-sweep benchmark (part of ``make bench``) keeps running."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_sweep_benchmark_measures_a_sweep_and_a_full_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks.sweep.measure`` fills a store with finished roots, finds nothing to
    recover in it, and reports both CPU timings for the report."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import sweep

    result = sweep.measure(finished=12, repeat=1)
    assert result["finished"] == 12
    assert result["sweep_ms"] >= 0
    assert result["read_all_ms"] >= 0
