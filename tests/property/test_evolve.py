"""``records.evolve``: the kernel's fast successor builder behaves like building the
record afresh -- same value as ``attrs.evolve``, unsealed, validated, no unknown
fields, and the predecessor untouched."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given

from stepkernel.domain.encoding import seal
from stepkernel.domain.records import (
    ActionRecord,
    LaneRecord,
    QueueEntry,
    Record,
    StepRecord,
    evolve,
)
from stepkernel.domain.status import ActionStatus, StepStatus
from stepkernel.testing.strategies import records


def _action() -> ActionRecord:
    return ActionRecord(
        id="a1",
        root_id="a1",
        parent=None,
        name="deploy",
        actor_type="App",
        actor_key="1",
        arguments="[]",
        step_names=("one", "two"),
        concurrency_key="App/1/deploy",
        checksum_key="App/1/deploy",
    )


@given(records)
def test_evolve_equals_attrs_evolve_and_is_unsealed(record: Record) -> None:
    """The successor of a sealed record equals ``attrs.evolve`` of it with the chain
    fields at their defaults: version 0, no digests, no last event, no cached text."""
    sealed = seal(attrs.evolve(record), version=3, prev_digest="p", event_id="e3")
    successor = evolve(sealed)
    assert successor == attrs.evolve(record)
    assert (successor.version, successor.digest, successor.prev_digest) == (0, "", "")
    assert successor.last_event == ""
    assert successor.state_text is None
    assert sealed.version == 3
    assert sealed.digest


def test_evolve_applies_changes_and_keeps_the_rest() -> None:
    """Changed fields take the new values; every other field is carried over."""
    record = _action()
    started = evolve(
        record,
        status=ActionStatus.PERFORMING,
        steps=(StepRecord(index=0, name="one"),),
    )
    assert started.status is ActionStatus.PERFORMING
    assert started.steps == (StepRecord(index=0, name="one"),)
    assert attrs.evolve(started, status=record.status, steps=()) == record


def test_evolve_refuses_an_unknown_field() -> None:
    """A misspelt field is a TypeError naming it, as with the record's constructor."""
    with pytest.raises(TypeError, match="stauts"):
        evolve(_action(), stauts=ActionStatus.FAILED)


def test_evolve_runs_the_validators_on_the_successor() -> None:
    """An impossible successor is refused exactly as a freshly built one would be."""
    with pytest.raises(ValueError, match="pending but has started steps"):
        evolve(_action(), steps=(StepRecord(index=0, name="one"),))
    step = StepRecord(index=0, name="one", status=StepStatus.PERFORMING, dependencies=("d",))
    with pytest.raises(ValueError, match="settled ids are not all dependencies"):
        evolve(step, settled=frozenset({"x"}))
    with pytest.raises(TypeError, match="queue must be a tuple"):
        evolve(LaneRecord(key="L", holder="a"), queue=[QueueEntry("b", "k", None)])
