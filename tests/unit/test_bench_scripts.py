"""The benchmark scripts that no other test runs keep running."""

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


def test_instruction_count_child_runs_the_recorded_kernel_calls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``benchmarks/instructions.py --child N`` (what it runs under callgrind) records
    the kernel history, decides it N times and reports how many events it holds."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import instructions

    instructions._child(1)
    assert capsys.readouterr().out.strip() == "events=1890"
