"""Lazy sealing: the kernel's writes get the same digests as eager sealing, computed
when first read, and stores never keep the versions a record succeeds."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given

from stepkernel.adapters.memory import SETTLE_DEPTH, InMemoryWorkflowStore
from stepkernel.domain.encoding import seal, seal_lazily, verify_digest
from stepkernel.domain.records import ActionRecord, LaneRecord, Record, StepRecord, evolve
from stepkernel.ports.store import Commit
from stepkernel.testing.strategies import records


@given(records, records)
def test_lazy_digests_equal_eager_digests(first: Record, second: Record) -> None:
    """A two-version chain sealed lazily reads back the digests eager sealing gives."""
    eager_1 = seal(attrs.evolve(first), version=1, prev_digest="", event_id="e1")
    eager_2 = seal(attrs.evolve(second), version=2, prev_digest=eager_1.digest, event_id="e2")
    lazy_1 = seal_lazily(attrs.evolve(first), base=None, event_id="e1")
    lazy_2 = seal_lazily(attrs.evolve(second), base=lazy_1, event_id="e2")
    # Reading the newest settles the older one too.
    assert (lazy_2.version, lazy_2.prev_digest, lazy_2.digest) == (
        2,
        eager_1.digest,
        eager_2.digest,
    )
    assert lazy_1.digest == eager_1.digest
    verify_digest(lazy_2)


def test_a_long_unsettled_chain_settles_without_recursion() -> None:
    """Ten thousand unsettled versions settle iteratively (no RecursionError), each
    chained from the one before."""
    record: Record = seal_lazily(LaneRecord(key="L", holder="a0"), base=None, event_id="e0")
    oldest = record
    for i in range(1, 10_000):
        record = seal_lazily(evolve(record, holder=f"a{i}"), base=record, event_id=f"e{i}")
    assert record.version == 10_000
    assert record.digest
    assert oldest.digest
    verify_digest(record)
    verify_digest(oldest)


def test_the_memory_store_bounds_unsettled_chains() -> None:
    """The in-memory store leaves digests to be computed when read, but a stored record
    chains fewer than ``SETTLE_DEPTH`` unsettled versions; read, every digest is
    what eager sealing gives (so memory and SQL records read back alike)."""
    store = InMemoryWorkflowStore()
    record = seal_lazily(LaneRecord(key="L", holder="a0"), base=None, event_id="e0")
    store.commit(Commit(writes=(record,)))
    eager = seal(LaneRecord(key="L", holder="a0"), version=1, prev_digest="", event_id="e0")
    for i in range(1, 3 * SETTLE_DEPTH):
        record = seal_lazily(evolve(record, holder=f"a{i}"), base=record, event_id=f"e{i}")
        store.commit(Commit(writes=(record,)))
        eager = seal(
            LaneRecord(key="L", holder=f"a{i}"),
            version=i + 1,
            prev_digest=eager.digest,
            event_id=f"e{i}",
        )
        stored = store.load([("lane", "L")])[("lane", "L")]
        assert stored is record
        assert stored.unsettled_depth < SETTLE_DEPTH
    assert (record.prev_digest, record.digest) == (eager.prev_digest, eager.digest)
    assert record.unsettled_depth == 0


def test_records_refuse_lists_where_tuples_and_sets_belong() -> None:
    """Collections are not converted on construction (that is the kernel's hot path):
    a list where a tuple or frozenset belongs is a TypeError naming the field."""
    with pytest.raises(TypeError, match="dependencies must be a tuple"):
        StepRecord(index=0, name="s", dependencies=["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="settled must be a frozenset"):
        StepRecord(index=0, name="s", dependencies=("a",), settled={"a"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="step_names must be a tuple"):
        ActionRecord(
            id="a",
            root_id="a",
            parent=None,
            name="n",
            actor_type="T",
            actor_key="k",
            arguments="[]",
            step_names=["n"],  # type: ignore[arg-type]
            concurrency_key="c",
            checksum_key="c",
        )


def _read_digest(start: Any, record: Record) -> None:
    start.wait()
    _ = record.digest


def test_threads_settling_overlapping_chains_agree_with_eager_sealing() -> None:
    """Several threads reading the digests of overlapping unsettled chains at once (a
    store's commit and a journal, say) all get what eager sealing gives: no thread
    mistakes a version another one just settled for a first version."""
    import sys
    import threading

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for trial in range(150):
            eager = [
                seal(LaneRecord(key="L", holder="a0"), version=1, prev_digest="", event_id="e0")
            ]
            lazy: list[Record] = [
                seal_lazily(LaneRecord(key="L", holder="a0"), base=None, event_id="e0")
            ]
            for i in range(1, 8):
                eager.append(
                    seal(
                        LaneRecord(key="L", holder=f"a{i}"),
                        version=i + 1,
                        prev_digest=eager[-1].digest,
                        event_id=f"e{i}",
                    )
                )
                lazy.append(
                    seal_lazily(evolve(lazy[-1], holder=f"a{i}"), base=lazy[-1], event_id=f"e{i}")
                )
            start = threading.Barrier(3)
            threads = [
                threading.Thread(target=_read_digest, args=(start, lazy[i])) for i in (3, 5, 7)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            got = [(r.prev_digest, r.digest) for r in lazy]
            assert got == [(r.prev_digest, r.digest) for r in eager], f"trial {trial}"
    finally:
        sys.setswitchinterval(previous)
