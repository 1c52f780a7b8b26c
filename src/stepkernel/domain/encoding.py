"""The domain-owned encoding of records: plain JSON-ready dicts, canonical text, digests.

Adapters store :func:`encode_record` text and rebuild records with
:func:`decode_record`; they never feed storage rows into ``__init__`` themselves.  A record
that does not decode, or whose digest chain does not hold, raises
:class:`CorruptRecordError` naming its key.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from stepkernel.domain.checksum import canonical_json, digest
from stepkernel.domain.errors import CorruptRecordError
from stepkernel.domain.records import (
    ACHIEVEMENT,
    ACTION,
    LANE,
    AchievementRecord,
    ActionRecord,
    Completion,
    Dependent,
    ErrorInfo,
    LaneRecord,
    QueueEntry,
    Record,
    RecordKey,
    StepRecord,
    WaitEdge,
    key_of,
)
from stepkernel.domain.status import ActionStatus, StepStatus

_CHAIN_FIELDS = ("version", "prev_digest", "digest", "last_event")


def _error(e: ErrorInfo | None) -> list[str] | None:
    return None if e is None else [e.type, e.message, e.traceback]


def _dep(d: Dependent) -> list[Any]:
    return [d.action_id, d.step, d.dep_id]


def _step(s: StepRecord) -> dict[str, Any]:
    return {
        "i": s.index,
        "n": s.name,
        "s": s.status.value,
        "a": s.attempt,
        "d": list(s.dependencies),
        "ok": sorted(s.settled),
        "ko": sorted(s.failures),
        "l": [list(pair) for pair in s.links],
        "e": _error(s.error),
        "t0": s.started_at,
        "t1": s.finished_at,
    }


def state_dict(record: Record) -> dict[str, Any]:
    """The record's state as a JSON-ready dict, without its chain fields."""
    if isinstance(record, ActionRecord):
        c = record.early_completion
        return {
            "kind": ACTION,
            "id": record.id,
            "root": record.root_id,
            "parent": None if record.parent is None else _dep(record.parent),
            "name": record.name,
            "actor_type": record.actor_type,
            "actor_key": record.actor_key,
            "args": record.arguments,
            "step_names": list(record.step_names),
            "ckey": record.concurrency_key,
            "sumkey": record.checksum_key,
            "sum": record.checksum,
            "outbound": record.outbound,
            "timeout": record.timeout,
            "after": sorted(s.value for s in record.after),
            "anc": sorted(record.ancestor_lanes),
            "status": record.status.value,
            "steps": [_step(s) for s in record.steps],
            "deps": [_dep(d) for d in record.dependents],
            "deadline": record.deadline,
            "awaiting": record.awaiting_completion,
            "early": None if c is None else [c.id, c.status.value, c.payload],
            "cid": record.completion_id,
            "output": record.output,
            "error": _error(record.error),
            "callbacks": record.callbacks,
            "by": record.superseded_by,
            "t_created": record.created_at,
            "t_started": record.started_at,
            "t_finished": record.finished_at,
        }
    if isinstance(record, LaneRecord):
        return {
            "kind": LANE,
            "key": record.key,
            "holder": record.holder,
            "hsum": None if record.holder_checksum is None else list(record.holder_checksum),
            "queue": [
                [q.action_id, q.checksum_key, q.checksum, sorted(q.ancestor_lanes), list(q.ancestors)]
                for q in record.queue
            ],
            "edges": [[e.lane, e.action_id, e.holder] for e in record.edges],
        }
    return {
        "kind": ACHIEVEMENT,
        "key": record.key,
        "sum": record.checksum,
        "action": record.action_id,
    }


def chain_digest(prev_digest: str, event_id: str, state_text: str) -> str:
    """The digest of a version: chained from the previous one and the event applied."""
    return digest(prev_digest, event_id, state_text)


def seal(record: Record, *, version: int, prev_digest: str, event_id: str) -> Record:
    """Return *record* as version *version*, produced by *event_id*, with its digest."""
    text = canonical_json(state_dict(record))
    return attrs.evolve(
        record,
        version=version,
        prev_digest=prev_digest,
        last_event=event_id,
        digest=chain_digest(prev_digest, event_id, text),
    )


def encode_record(record: Record) -> str:
    """Canonical JSON text of the whole record (state and chain fields)."""
    data = state_dict(record)
    data["version"] = record.version
    data["prev_digest"] = record.prev_digest
    data["digest"] = record.digest
    data["last_event"] = record.last_event
    return canonical_json(data)


def _error_from(v: Any) -> ErrorInfo | None:
    return None if v is None else ErrorInfo(type=v[0], message=v[1], traceback=v[2])


def _dep_from(v: Any) -> Dependent:
    return Dependent(action_id=v[0], step=int(v[1]), dep_id=v[2])


def _step_from(v: dict[str, Any]) -> StepRecord:
    return StepRecord(
        index=v["i"],
        name=v["n"],
        status=StepStatus(v["s"]),
        attempt=v["a"],
        dependencies=v["d"],
        settled=v["ok"],
        failures=v["ko"],
        links=[tuple(p) for p in v["l"]],
        error=_error_from(v["e"]),
        started_at=v["t0"],
        finished_at=v["t1"],
    )


def _from_state(data: dict[str, Any]) -> Record:
    chain = {name: data[name] for name in _CHAIN_FIELDS}
    kind = data["kind"]
    if kind == ACTION:
        early = data["early"]
        return ActionRecord(
            id=data["id"],
            root_id=data["root"],
            parent=None if data["parent"] is None else _dep_from(data["parent"]),
            name=data["name"],
            actor_type=data["actor_type"],
            actor_key=data["actor_key"],
            arguments=data["args"],
            step_names=data["step_names"],
            concurrency_key=data["ckey"],
            checksum_key=data["sumkey"],
            checksum=data["sum"],
            outbound=data["outbound"],
            timeout=data["timeout"],
            after=[ActionStatus(s) for s in data["after"]],
            ancestor_lanes=data["anc"],
            status=ActionStatus(data["status"]),
            steps=[_step_from(s) for s in data["steps"]],
            dependents=[_dep_from(d) for d in data["deps"]],
            deadline=data["deadline"],
            awaiting_completion=data["awaiting"],
            early_completion=None
            if early is None
            else Completion(id=early[0], status=ActionStatus(early[1]), payload=early[2]),
            completion_id=data["cid"],
            output=data["output"],
            error=_error_from(data["error"]),
            callbacks=data["callbacks"],
            superseded_by=data["by"],
            created_at=data["t_created"],
            started_at=data["t_started"],
            finished_at=data["t_finished"],
            **chain,
        )
    if kind == LANE:
        return LaneRecord(
            key=data["key"],
            holder=data["holder"],
            holder_checksum=None if data["hsum"] is None else tuple(data["hsum"]),
            queue=[
                QueueEntry(
                    action_id=q[0], checksum_key=q[1], checksum=q[2], ancestor_lanes=q[3],
                    ancestors=q[4],
                )
                for q in data["queue"]
            ],
            edges=[WaitEdge(lane=e[0], action_id=e[1], holder=e[2]) for e in data["edges"]],
            **chain,
        )
    if kind == ACHIEVEMENT:
        return AchievementRecord(
            key=data["key"], checksum=data["sum"], action_id=data["action"], **chain
        )
    raise ValueError(f"unknown record kind {kind!r}")


def decode_record(key: RecordKey, text: str | bytes, *, verify: bool = True) -> Record:
    """Rebuild the record stored at *key* from :func:`encode_record` text.

    Raises :class:`CorruptRecordError` (fields ``key`` and ``reason``) when the text does
    not decode, names another key, or (with *verify*) its digest does not match.
    """
    try:
        data = json.loads(text)
        record = _from_state(data)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptRecordError(
            f"record {key[0]}:{key[1]} does not decode: {exc}", key=key, reason=str(exc)
        ) from None
    if key_of(record) != tuple(key):
        raise CorruptRecordError(
            f"record stored at {key[0]}:{key[1]} names {key_of(record)}",
            key=key,
            reason="key mismatch",
        )
    if verify:
        verify_digest(record)
    return record


def verify_digest(record: Record) -> None:
    """Raise :class:`CorruptRecordError` unless the record's digest matches its state."""
    expected = chain_digest(record.prev_digest, record.last_event, canonical_json(state_dict(record)))
    if expected != record.digest:
        key = key_of(record)
        raise CorruptRecordError(
            f"record {key[0]}:{key[1]} v{record.version}: digest mismatch "
            f"(stored {record.digest}, computed {expected})",
            key=key,
            reason="digest mismatch",
        )
