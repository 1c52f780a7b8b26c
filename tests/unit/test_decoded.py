"""The decoded-records cache of the text stores: exact-text hits only, bounded size."""

from __future__ import annotations

from stepkernel.adapters.decoded import DecodedRecords
from stepkernel.domain.records import LaneRecord


def test_a_hit_needs_the_exact_stored_text() -> None:
    """A record is served only for the very text it was decoded from."""
    cache = DecodedRecords(size=8)
    record = LaneRecord(key="L", holder="a")
    cache.remember(("lane", "L"), "text-1", record)
    assert cache.get(("lane", "L"), "text-1") is record
    assert cache.get(("lane", "L"), "text-2") is None
    assert cache.get(("lane", "M"), "text-1") is None


def test_the_cache_stays_bounded_and_keeps_what_is_in_use() -> None:
    """However many records pass through, at most *size* are kept; one read again
    recently survives while older ones go."""
    cache = DecodedRecords(size=8)
    hot = LaneRecord(key="hot", holder="a")
    cache.remember(("lane", "hot"), "t", hot)
    for i in range(100):
        cache.remember(("lane", str(i)), "t", LaneRecord(key=str(i), holder="a"))
        assert cache.get(("lane", "hot"), "t") is hot
    kept = sum(cache.get(("lane", str(i)), "t") is not None for i in range(100))
    assert kept <= 8
    assert cache.get(("lane", "0"), "t") is None
