"""Records remembered with the exact stored text they were decoded from.

Stores that keep records as text (SQL, Redis) decode the same record again and again:
an action is loaded for its step, then for its next step, then by its parent's
settlement.  :class:`DecodedRecords` keeps the last decoding of each key with the text
it came from and answers a load from it only when the stored text is *identical* -- so
a record changed by another process, or tampered with, is decoded (and its digest
verified) afresh.  Bounded: the oldest entries go first.
"""

from __future__ import annotations

import contextlib

from stepkernel.domain.records import Record, RecordKey

SIZE = 4096
"""Records remembered per store."""


class DecodedRecords:
    """Key -> (stored text, record), at most *size* of them (oldest out)."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._entries: dict[RecordKey, tuple[str, Record]] = {}

    def get(self, key: RecordKey, text: str) -> Record | None:
        """The record remembered for *key*, if it was decoded from exactly *text*."""
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == text else None

    def remember(self, key: RecordKey, text: str, record: Record) -> None:
        """*record* is what *text* at *key* decodes to (e.g. it was just written so)."""
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (text, record)
        if len(entries) > self.size:
            # Threads may race here; losing one eviction only leaves the cache one over.
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del entries[next(iter(entries))]
