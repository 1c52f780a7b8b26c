"""A commit turned into the ``KEYS`` and ``ARGV`` of the commit script, and the stored
value of a record.

A record is stored as ``<version>|<encode_record text>``: the script reads the version
from the first bytes (``GETRANGE``) without fetching the record, and a record whose text
does not decode still names its version (so the runtime can replace it).  Messages are
stored as :func:`~stepkernel.domain.encoding.encode_message` text.
"""

from __future__ import annotations

import json

from stepkernel.adapters.redis.keys import Keyspace
from stepkernel.domain.encoding import encode_message, encode_record
from stepkernel.domain.errors import ConflictError
from stepkernel.domain.records import ACTION, ActionRecord, Record, RecordKey, key_of
from stepkernel.ports.store import Commit

__all__ = ["CommitArgs", "index_entry", "record_value", "split_value"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def record_value(record: Record) -> str:
    """The stored value of *record*: its version, ``|``, its encoded text."""
    return f"{record.version}|{encode_record(record)}"


def split_value(value: str) -> tuple[int | None, str]:
    """``(version, text)`` of a stored value; the version is ``None`` when unreadable."""
    head, bar, text = value.partition("|")
    if not bar:
        return None, value
    try:
        return int(head), text
    except ValueError:
        return None, text


def index_entry(record: ActionRecord) -> str:
    """The action's secondary-index entry: ``created_at`` (exact, as text), the indexed
    fields in :data:`~stepkernel.adapters.redis.keys.INDEX_FIELDS` order, then the
    callbacks state (indexed only when ``"pending"``: ``{p}:x:after``)."""
    return _dumps(
        [
            repr(float(record.created_at)),
            record.status.value,
            record.root_id,
            record.actor_type,
            record.actor_key,
            record.name,
            record.callbacks,
        ]
    )


class CommitArgs:
    """The commit script's ``keys`` and ``args`` for one :class:`Commit`.

    ``checks`` lists ``(key, expected version)`` in the script's checking order (guards,
    deletes, writes: the reference adapter's), so a conflict position maps back to its
    key; ``stored`` the ``(key, value, record)`` of every write, for the decode cache.
    """

    __slots__ = ("args", "checks", "keys", "stored")

    def __init__(self, space: Keyspace, commit: Commit, token: str) -> None:
        record_key = space.record
        checks: list[tuple[RecordKey, int]] = []
        keys = [space.epoch, space.due]
        guards: list[str] = []
        deletes: list[str] = []
        writes: list[str] = []
        stored: list[tuple[RecordKey, str, Record]] = []
        for guarded, version in commit.guards.items():
            key = (guarded[0], guarded[1])
            keys.append(record_key(key))
            checks.append((key, version))
            guards.append(str(version))
        for tomb in commit.deletes:
            key = (tomb.key[0], tomb.key[1])
            keys.append(record_key(key))
            checks.append((key, tomb.version))
            deletes += (str(tomb.version), key[1] if key[0] == ACTION else "")
        for record in commit.writes:
            key = key_of(record)
            value = record_value(record)
            keys.append(record_key(key))
            checks.append((key, record.version - 1))
            if isinstance(record, ActionRecord):
                writes += (str(record.version - 1), value, record.id, index_entry(record))
            else:
                writes += (str(record.version - 1), value, "", "")
            stored.append((key, value, record))
        acks = list(dict.fromkeys(commit.ack))
        enqueue: list[str] = []
        for message in commit.enqueue:
            enqueue += (
                message.id,
                repr(float(message.available_at)),
                message.action_id,
                encode_message(message),
            )
        self.keys = keys
        self.args = [
            token,
            space.base,
            str(len(guards)),
            str(len(commit.deletes)),
            str(len(commit.writes)),
            str(len(acks)),
            str(len(commit.enqueue)),
            *guards,
            *deletes,
            *writes,
            *acks,
            *enqueue,
        ]
        self.checks = checks
        self.stored = stored

    def conflict(self, position: int, actual: int) -> ConflictError:
        """The :class:`ConflictError` for the script's answer ``{position, actual}``."""
        key, expected = self.checks[position - 1]
        return ConflictError(
            f"{key[0]}:{key[1]} is at version {actual}, expected {expected}",
            key=key,
            expected=expected,
            actual=actual,
        )
