"""Kernel cost in instructions per event, independent of how fast the host is today.

``python benchmarks/instructions.py`` runs the kernel benchmark's recorded ``decide``
calls under ``valgrind --tool=callgrind`` twice -- once with no timed loop, once with
*loops* of them -- and prints (difference of the two instruction counts) / (loops x
events).  The count repeats to about 0.1% between runs (``PYTHONHASHSEED=0``), so it
compares kernel changes on a shared machine whose speed swings by 2x; wall-clock figures
(``benchmarks/kernel.py``) remain what the targets are stated in.  Needs valgrind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(loops: int) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import kernel

    calls, _final = kernel.decide_calls(kernel.record_entries())
    for _ in range(loops):
        kernel._time_calls(calls)
    print(f"events={len(calls)}")


def _instructions(loops: int) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as directory:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={os.path.join(directory, 'cg.out')}",
                sys.executable,
                __file__,
                "--child",
                str(loops),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    collected = re.search(r"Collected : (\d+)", out.stderr)
    events = re.search(r"events=(\d+)", out.stdout)
    if collected is None or events is None:
        raise RuntimeError(f"callgrind gave no count:\n{out.stderr[-2000:]}")
    return int(collected.group(1)), int(events.group(1))


def measure(loops: int = 10) -> float:
    """Instructions per kernel event (see module)."""
    base, _ = _instructions(0)
    total, events = _instructions(loops)
    return (total - base) / (loops * events)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]))
    else:
        print(f"{measure():,.0f} instructions per kernel event (callgrind)")
