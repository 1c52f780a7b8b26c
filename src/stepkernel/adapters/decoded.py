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
from collections import OrderedDict

from stepkernel.domain.records import Record, RecordKey

SIZE = 4096
"""Records remembered per store."""


class DecodedRecords:
    """Key -> (stored text, record), at most *size* of them (oldest out)."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        # An OrderedDict: evicting the oldest is O(1).  (Deleting from the front of a
        # plain dict leaves dummies that every later ``next(iter(...))`` walks over.)
        self._entries: OrderedDict[RecordKey, tuple[str, Record]] = OrderedDict()

    def get(self, key: RecordKey, text: str) -> Record | None:
        """The record remembered for *key*, if it was decoded from exactly *text*."""
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == text else None

    def remember(self, key: RecordKey, text: str, record: Record) -> None:
        """*record* is what *text* at *key* decodes to (e.g. it was just written so)."""
        entries = self._entries
        entries[key] = (text, record)
        # Threads may race here; a lost move or eviction only misorders or overfills
        # the cache by one entry.
        with contextlib.suppress(KeyError):
            entries.move_to_end(key)
            if len(entries) > self.size:
                entries.popitem(last=False)
