"""Records remembered with the exact stored text they were decoded from.

Stores that keep records as text (SQL, Redis) decode the same record again and again:
an action is loaded for its step, then for its next step, then by its parent's
settlement.  :class:`DecodedRecords` keeps the last decoding of each key with the text
it came from and answers a load from it only when the stored text is *identical* -- so
a record changed by another process, or tampered with, is decoded (and its digest
verified) afresh.  Bounded: the oldest entries go first (two generations, see the class).
"""

from __future__ import annotations

from stepkernel.domain.records import Record, RecordKey

SIZE = 4096
"""Records remembered per store."""


class DecodedRecords:
    """Key -> (stored text, record), about *size* of them: two generations of plain
    dicts -- new entries go to the young one; when it is full it becomes the old one and
    the previous old one is dropped.  A hit in the old generation is moved back to the
    young one.  Cheaper per call than an ordered LRU, and as good for a cache whose
    entries are mostly used within moments of being made."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._young: dict[RecordKey, tuple[str, Record]] = {}
        self._old: dict[RecordKey, tuple[str, Record]] = {}

    def get(self, key: RecordKey, text: str) -> Record | None:
        """The record remembered for *key*, if it was decoded from exactly *text*."""
        hit = self._young.get(key)
        if hit is None:
            hit = self._old.get(key)
            if hit is None:
                return None
            self.remember(key, hit[0], hit[1])
        return hit[1] if hit[0] == text else None

    def remember(self, key: RecordKey, text: str, record: Record) -> None:
        """*record* is what *text* at *key* decodes to (e.g. it was just written so)."""
        young = self._young
        young[key] = (text, record)
        if len(young) >= self.size // 2:
            # Threads may race here: at worst an entry is dropped early (a cache miss).
            self._old, self._young = young, {}
