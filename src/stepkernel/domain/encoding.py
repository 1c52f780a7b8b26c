"""The domain-owned encoding of records: canonical text, digests, and back.

A record's *state text* is compact JSON of a positional list whose first element tags
the kind and format (``"A1"`` action, ``"L1"`` lane, ``"G1"`` achievement): field order
is fixed here, so the text is canonical without sorting keys, and cheap to produce.  The
stored text (:func:`encode_record`) is ``[version, prev_digest, digest, last_event,
state]``.  Adapters store that text and rebuild records with :func:`decode_record`; they
never feed storage rows into ``__init__`` themselves.  A record that does not decode, or
whose digest chain does not hold, raises :class:`CorruptRecordError` naming its key.
"""

from __future__ import annotations

import json
from typing import Any

from stepkernel.domain.checksum import digest
from stepkernel.domain.errors import CorruptRecordError
from stepkernel.domain.messages import Message, MessageKind
from stepkernel.domain.records import (
    FIRST_VERSION,
    AchievementRecord,
    ActionRecord,
    Chained,
    Completion,
    Dependent,
    ErrorInfo,
    LaneRecord,
    QueueEntry,
    Record,
    RecordKey,
    StepRecord,
    key_of,
)
from stepkernel.domain.status import ActionStatus, StepStatus

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode

ACTION_TAG = "A1"
LANE_TAG = "L1"
ACHIEVEMENT_TAG = "G1"
MESSAGE_TAG = "M1"


def _error(e: ErrorInfo | None) -> list[str] | None:
    return None if e is None else [e.type, e.message, e.traceback]


def _step(s: StepRecord) -> list[Any]:
    cached = s.encoded
    if cached is not None:
        return cached
    encoded = [
        s.index,
        s.name,
        s.status,
        s.attempt,
        list(s.dependencies),
        sorted(s.settled) if s.settled else [],
        sorted(s.failures) if s.failures else [],
        [list(pair) for pair in s.links],
        [list(pair) for pair in s.wakes],
        _error(s.error),
        s.started_at,
        s.finished_at,
    ]
    object.__setattr__(s, "encoded", encoded)
    return encoded


def state_list(record: Record) -> list[Any]:
    """The record's state (without its chain fields) as a positional JSON-ready list."""
    if isinstance(record, ActionRecord):
        c = record.early_completion
        p = record.parent
        return [
            ACTION_TAG,
            record.id,
            record.root_id,
            None if p is None else [p.action_id, p.step, p.dep_id],
            record.name,
            record.actor_type,
            record.actor_key,
            record.arguments,
            list(record.step_names),
            record.concurrency_key,
            record.checksum_key,
            record.checksum,
            record.outbound,
            record.timeout,
            sorted(record.after) if record.after else [],
            sorted(record.ancestor_lanes) if record.ancestor_lanes else [],
            record.status,
            [_step(s) for s in record.steps],
            [[d.action_id, d.step, d.dep_id] for d in record.dependents],
            record.deadline,
            record.awaiting_completion,
            None if c is None else [c.id, c.status, c.payload],
            record.completion_id,
            record.output,
            _error(record.error),
            record.callbacks,
            record.superseded_by,
            record.created_at,
            record.started_at,
            record.finished_at,
        ]
    if isinstance(record, LaneRecord):
        return [
            LANE_TAG,
            record.key,
            record.holder,
            None if record.holder_checksum is None else list(record.holder_checksum),
            [[q.action_id, q.checksum_key, q.checksum] for q in record.queue],
        ]
    return [ACHIEVEMENT_TAG, record.key, record.checksum, record.action_id, record.claimed_by]


def state_text(record: Record) -> str:
    """Canonical text of the record's state (cached on sealed records)."""
    cached = record.state_text
    if cached is not None:
        return cached
    return _dumps(state_list(record))


def chain_digest(prev_digest: str, event_id: str, text: str) -> str:
    """The digest of a version: chained from the previous one and the event applied."""
    return digest(prev_digest, event_id, text)


def seal(record: Record, *, version: int, prev_digest: str, event_id: str) -> Record:
    """*record*, freshly built, as version *version* produced by *event_id*, with its
    digest and cached state text computed now.

    The record is completed in place: it must be a new object no one else holds yet.
    """
    text = _dumps(state_list(record))
    setattr_ = object.__setattr__
    setattr_(record, "version", version)
    setattr_(record, "_prev_digest", prev_digest)
    setattr_(record, "last_event", event_id)
    setattr_(record, "_digest", chain_digest(prev_digest, event_id, text))
    setattr_(record, "state_text", text)
    return record


def seal_lazily(record: Record, *, base: Record | None, event_id: str) -> Record:
    """*record*, freshly built by the kernel, as the successor of *base* (``None``: a
    first version) produced by *event_id*; its digest is computed on first read.

    The kernel seals its writes this way so that ``decide`` does no hashing: the work
    moves to the store's commit, which reads every digest (encoding a record reads it;
    the in-memory store settles it explicitly so records never keep their predecessors).
    Completed in place, like :func:`seal`.
    """
    state = record.__dict__  # records are dict-backed: one dict, no setattr per field
    if base is None:
        state["version"] = 1
        state["last_event"] = event_id
        state["_base"] = FIRST_VERSION
        state["_depth"] = 1
    else:
        state["version"] = base.version + 1
        state["last_event"] = event_id
        state["_base"] = base
        state["_depth"] = 1 + base.unsettled_depth
    return record


def settle_digest(record: Chained) -> None:
    """Compute the digest of a lazily sealed *record* (and of every unsettled version
    it chains from, oldest first -- iteratively, so long chains are fine).

    Thread-safe: several threads may settle overlapping chains at once (a store's
    commit and a journal reading the same versions).  Each records the base of every
    version as it walks, and computes from those: a version another thread settles
    meanwhile gets the same values (they are deterministic), and a version is marked
    settled (``_base`` cleared) only after its digest is written, so a walker that finds
    a version settled reads a digest that is already there."""
    chain: list[tuple[Chained, object]] = []
    current: object = record
    while isinstance(current, Chained):
        base = current._base
        if base is None:
            break
        chain.append((current, base))
        current = base
    setattr_ = object.__setattr__
    for version, base in reversed(chain):
        prev = base._digest if isinstance(base, Chained) else ""
        text = _dumps(state_list(version))  # type: ignore[arg-type]
        setattr_(version, "_prev_digest", prev)
        setattr_(version, "_digest", chain_digest(prev, version.last_event, text))
        setattr_(version, "state_text", text)
        setattr_(version, "_base", None)
        setattr_(version, "_depth", 0)


def encode_record(record: Record) -> str:
    """The stored text of *record*: chain fields and state."""
    return (
        f"[{record.version},{_dumps(record.prev_digest)},{_dumps(record.digest)},"
        f"{_dumps(record.last_event)},{state_text(record)}]"
    )


def _error_from(v: Any) -> ErrorInfo | None:
    return None if v is None else ErrorInfo(type=v[0], message=v[1], traceback=v[2])


def _dep_from(v: Any) -> Dependent:
    return Dependent(action_id=v[0], step=int(v[1]), dep_id=v[2])


def _step_from(v: list[Any]) -> StepRecord:
    return StepRecord(
        index=v[0],
        name=v[1],
        status=StepStatus(v[2]),
        attempt=v[3],
        dependencies=tuple(v[4]),
        settled=frozenset(v[5]),
        failures=frozenset(v[6]),
        links=tuple((p[0], p[1]) for p in v[7]),
        wakes=tuple((w[0], float(w[1])) for w in v[8]),
        error=_error_from(v[9]),
        started_at=v[10],
        finished_at=v[11],
    )


def _from_state(state: list[Any], chain: dict[str, Any]) -> Record:
    tag = state[0]
    if tag == ACTION_TAG:
        early = state[21]
        return ActionRecord(
            id=state[1],
            root_id=state[2],
            parent=None if state[3] is None else _dep_from(state[3]),
            name=state[4],
            actor_type=state[5],
            actor_key=state[6],
            arguments=state[7],
            step_names=tuple(state[8]),
            concurrency_key=state[9],
            checksum_key=state[10],
            checksum=state[11],
            outbound=state[12],
            timeout=state[13],
            after=frozenset(ActionStatus(s) for s in state[14]),
            ancestor_lanes=frozenset(state[15]),
            status=ActionStatus(state[16]),
            steps=tuple(_step_from(s) for s in state[17]),
            dependents=tuple(_dep_from(d) for d in state[18]),
            deadline=state[19],
            awaiting_completion=state[20],
            early_completion=None
            if early is None
            else Completion(id=early[0], status=ActionStatus(early[1]), payload=early[2]),
            completion_id=state[22],
            output=state[23],
            error=_error_from(state[24]),
            callbacks=state[25],
            superseded_by=state[26],
            created_at=state[27],
            started_at=state[28],
            finished_at=state[29],
            **chain,
        )
    if tag == LANE_TAG:
        return LaneRecord(
            key=state[1],
            holder=state[2],
            holder_checksum=None if state[3] is None else tuple(state[3]),
            queue=tuple(
                QueueEntry(action_id=q[0], checksum_key=q[1], checksum=q[2]) for q in state[4]
            ),
            **chain,
        )
    if tag == ACHIEVEMENT_TAG:
        return AchievementRecord(
            key=state[1], checksum=state[2], action_id=state[3], claimed_by=state[4], **chain
        )
    raise ValueError(f"unknown record format {tag!r}")


def decode_record(
    key: RecordKey, text: str | bytes, *, verify: bool = True, version: int | None = None
) -> Record:
    """Rebuild the record stored at *key* from :func:`encode_record` text.

    Raises :class:`CorruptRecordError` (fields ``key``, ``reason`` and ``version``: the
    stored version when the adapter knows it, so the runtime can replace the record)
    when the text does not decode, names another key, or (with *verify*) its digest does
    not match.
    """
    try:
        return _decode(key, text, verify=verify)
    except CorruptRecordError as exc:
        if version is None:
            raise
        raise CorruptRecordError(
            exc.message, key=key, reason=getattr(exc, "reason", ""), version=version
        ) from None


_raw_decode = json.JSONDecoder().raw_decode


def _split(text: str) -> tuple[Any, Any, Any, Any, str] | None:
    """``version, prev_digest, digest, last_event`` and the state *text* of stored
    :func:`encode_record` text, or ``None`` when it is not in exactly that compact form
    (then it is decoded the slow way)."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    head: list[Any] = []
    at = 1
    for _ in range(4):
        try:
            value, end = _raw_decode(text, at)
        except ValueError:  # e.g. whitespace: not the compact form
            return None
        if text[end : end + 1] != ",":
            return None
        head.append(value)
        at = end + 1
    return head[0], head[1], head[2], head[3], text[at:-1]


def _decode(key: RecordKey, text: str | bytes, *, verify: bool) -> Record:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        split = _split(text)
        if split is None:
            version, prev_digest, stored_digest, last_event, state = json.loads(text)
            state_text = None
        else:
            version, prev_digest, stored_digest, last_event, state_text = split
            state = json.loads(state_text)
        record = _from_state(
            state,
            {
                "version": version,
                "prev_digest": prev_digest,
                "digest": stored_digest,
                "last_event": last_event,
            },
        )
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
        if (
            state_text is not None
            and isinstance(prev_digest, str)
            and isinstance(last_event, str)
            and chain_digest(prev_digest, last_event, state_text) == record.digest
        ):
            # The digest covers exactly the stored state text: nothing to re-encode.
            object.__setattr__(record, "state_text", state_text)
        else:
            verify_digest(record)
    return record


def verify_digest(record: Record) -> None:
    """Raise :class:`CorruptRecordError` unless the record's digest matches its state."""
    text = _dumps(state_list(record))
    expected = chain_digest(record.prev_digest, record.last_event, text)
    if expected != record.digest:
        key = key_of(record)
        raise CorruptRecordError(
            f"record {key[0]}:{key[1]} v{record.version}: digest mismatch "
            f"(stored {record.digest}, computed {expected})",
            key=key,
            reason="digest mismatch",
        )
    object.__setattr__(record, "state_text", text)


def encode_message(message: Message) -> str:
    """The stored text of a queued message."""
    return _dumps(
        [
            MESSAGE_TAG,
            message.id,
            message.kind,
            message.action_id,
            message.step,
            message.attempt,
            message.dep,
            message.ok,
            message.status,
            message.available_at,
            [list(k) for k in message.preload],
        ]
    )


def decode_message(message_id: str, text: str | bytes) -> Message:
    """Rebuild a queued message from :func:`encode_message` text; anything else raises
    :class:`CorruptRecordError` with key ``("message", message_id)``."""
    try:
        data = json.loads(text)
        if data[0] != MESSAGE_TAG:
            raise ValueError(f"unknown message format {data[0]!r}")
        message = Message(
            id=data[1],
            kind=MessageKind(data[2]),
            action_id=data[3],
            step=data[4],
            attempt=data[5],
            dep=data[6],
            ok=data[7],
            status=data[8],
            available_at=data[9],
            preload=tuple((k[0], k[1]) for k in data[10]),
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptRecordError(
            f"message {message_id} does not decode: {exc}",
            key=("message", message_id),
            reason=str(exc),
        ) from None
    if message.id != message_id:
        raise CorruptRecordError(
            f"message stored as {message_id} names {message.id}",
            key=("message", message_id),
            reason="id mismatch",
        )
    return message
