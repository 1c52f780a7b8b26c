"""Recording what an app commits, saving it, and replaying it (golden histories).

>>> entries = record_history(app)       # doctest: +SKIP
>>> ... run the workflow ...
>>> save_history(entries, "tests/golden/deploy.json")   # doctest: +SKIP
>>> replay(load_history("tests/golden/deploy.json"))    # doctest: +SKIP

A replay that produces a different digest raises :class:`ReplayDivergenceError`: the
meaning of some event changed.
"""

from __future__ import annotations

import json
from pathlib import Path

from stepkernel.domain.replay import Entry, decode_entry, encode_entry, replay
from stepkernel.runtime.app import App

__all__ = ["load_history", "record_history", "replay", "save_history"]


def record_history(app: App) -> list[Entry]:
    """Start recording every event *app* commits; returns the (growing) list."""
    entries: list[Entry] = []
    app.engine.journal = entries.append
    return entries


def save_history(entries: list[Entry], path: str | Path) -> None:
    """Write *entries* as JSON (one entry per line inside a list, stable order)."""
    lines = ",\n".join(json.dumps(encode_entry(e), sort_keys=True) for e in entries)
    Path(path).write_text(f"[\n{lines}\n]\n", encoding="utf-8")


def load_history(path: str | Path) -> list[Entry]:
    """Read entries written by :func:`save_history`."""
    return [decode_entry(d) for d in json.loads(Path(path).read_text(encoding="utf-8"))]
