"""Recorded histories and their replay.

A history is the list of events a store committed, in commit order, each with the
``now`` it was decided at and the digest of every record version it produced.  Because
``decide`` is pure and every commit checked the versions it read, folding the same
events over an empty state must produce the same digests; :func:`replay` does that and
raises :class:`ReplayDivergenceError` (with the entry index, the key, and the expected
and actual digests) at the first difference.  Committed golden histories therefore fail
loudly when the meaning of an event changes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from attrs import frozen

from stepkernel.domain import events as ev
from stepkernel.domain.errors import MissingRecordsError, ReplayDivergenceError
from stepkernel.domain.kernel import decide, keys_for
from stepkernel.domain.lanes import run_preload
from stepkernel.domain.messages import Message, MessageKind
from stepkernel.domain.records import ActionRecord, ErrorInfo, Record, RecordKey, key_of
from stepkernel.domain.status import ActionStatus
from stepkernel.domain.view import Decision, View

_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        ev.ActionSpec,
        ev.ShortCircuit,
        ev.RootSubmitted,
        ev.StepBodyRan,
        ev.StepBodyRaised,
        ev.StepBodiesRan,
        ev.MessageDelivered,
        ev.CallbacksRan,
        ev.CompletionRequested,
        ev.CancelRequested,
        Message,
        ErrorInfo,
    )
}
_ENUMS: dict[str, type[enum.Enum]] = {"ActionStatus": ActionStatus, "MessageKind": MessageKind}


@frozen
class Entry:
    """One committed event: the event, the ``now`` it was decided at, and the digest of
    each record it wrote (``""`` for a record it deleted), sorted by key."""

    event: ev.Event
    now: float
    digests: tuple[tuple[RecordKey, str], ...]

    @classmethod
    def of(cls, event: ev.Event, now: float, decision: Decision) -> Entry:
        return cls(event=event, now=now, digests=digests_of(decision))


def digests_of(decision: Decision) -> tuple[tuple[RecordKey, str], ...]:
    """What *decision* writes, as sorted ``(key, digest)`` pairs (``""`` = deleted)."""
    pairs = [(key_of(r), r.digest) for r in decision.writes]
    pairs.extend((t.key, "") for t in decision.deletes)
    return tuple(sorted(pairs))


def replay(
    entries: Iterable[Entry], records: Mapping[RecordKey, Record] | None = None
) -> dict[RecordKey, Record]:
    """Fold *entries* over *records* (default: nothing stored) and return the final
    records; raise :class:`ReplayDivergenceError` at the first digest that differs."""
    state: dict[RecordKey, Record] = dict(records or {})
    for index, entry in enumerate(entries):
        view = first_view(entry.event, state)
        while True:
            try:
                decision = decide(View(records=view), entry.event, entry.now)
                break
            except MissingRecordsError as need:
                for key in need.keys:
                    view[key] = state.get(key)
        actual = digests_of(decision)
        if actual != entry.digests:
            expected = dict(entry.digests)
            got = dict(actual)
            key = next(k for k in sorted(set(expected) | set(got)) if expected.get(k) != got.get(k))
            raise ReplayDivergenceError(
                f"entry {index} ({entry.event.event_id}): {key[0]}:{key[1]} replayed as "
                f"{got.get(key)!r}, recorded as {expected.get(key)!r}",
                index=index,
                event_id=entry.event.event_id,
                key=key,
                expected=expected.get(key),
                actual=got.get(key),
            )
        for tomb in decision.deletes:
            state.pop(tomb.key, None)
        for record in decision.writes:
            state[key_of(record)] = record
    return state


def first_view(
    event: ev.Event, state: Mapping[RecordKey, Record]
) -> dict[RecordKey, Record | None]:
    """What the runtime would load first: the event's keys, plus the lane, scope and
    waiting parents of an action whose last step is running (saves re-decisions)."""
    view: dict[RecordKey, Record | None] = {k: state.get(k) for k in keys_for(event)}
    for record in list(view.values()):
        if isinstance(record, ActionRecord) and record.steps:
            for key in run_preload(record, record.steps[-1].index):
                view.setdefault(key, state.get(key))
    return view


# -- encoding entries as JSON-ready data ----------------------------------------------------------


def encode_value(value: Any) -> Any:
    """Events and what they hold as JSON-ready data with type tags."""
    if isinstance(value, enum.Enum):
        return {"$enum": type(value).__name__, "value": value.value}
    if attrs.has(type(value)):
        data: dict[str, Any] = {"$type": type(value).__name__}
        for field in attrs.fields(type(value)):
            data[field.name] = encode_value(getattr(value, field.name))
        return data
    if isinstance(value, frozenset):
        return {"$set": sorted((encode_value(v) for v in value), key=repr)}
    if isinstance(value, tuple | list):
        return [encode_value(v) for v in value]
    return value


def decode_value(data: Any) -> Any:
    """The inverse of :func:`encode_value` (lists come back as tuples)."""
    if isinstance(data, dict):
        if "$enum" in data:
            return _ENUMS[data["$enum"]](data["value"])
        if "$set" in data:
            return frozenset(decode_value(v) for v in data["$set"])
        cls = _CLASSES[data["$type"]]
        return cls(**{k: decode_value(v) for k, v in data.items() if k != "$type"})
    if isinstance(data, list):
        return tuple(decode_value(v) for v in data)
    return data


def encode_entry(entry: Entry) -> dict[str, Any]:
    return {
        "event": encode_value(entry.event),
        "now": entry.now,
        "digests": [[k[0], k[1], d] for k, d in entry.digests],
    }


def decode_entry(data: Mapping[str, Any]) -> Entry:
    return Entry(
        event=decode_value(data["event"]),
        now=float(data["now"]),
        digests=tuple(((k, key), d) for k, key, d in data["digests"]),
    )
