"""Rows in and out of the SQL store: a commit turned into statement parameters, and
stored text turned back into records and messages.

Record text is the domain's :func:`~stepkernel.domain.encoding.encode_record`, message
text its :func:`~stepkernel.domain.encoding.encode_message`; the other columns are
copies of fields, kept for indexes (see :mod:`stepkernel.adapters.sql.schema`).
"""

from __future__ import annotations

from typing import Any

from stepkernel.domain.encoding import encode_message, encode_record
from stepkernel.domain.errors import ConflictError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ActionRecord, Record, RecordKey, key_of
from stepkernel.ports.store import Commit

__all__ = ["CommitPlan", "check_version", "message_row", "record_row"]


class CommitPlan:
    """A commit turned into statement parameters, computed once outside the database.

    ``deletes``/``updates``/``inserts`` are the version-checked statements' rows (fast
    path); ``guards``, ``delete_checks`` and ``write_checks`` the expected versions in the
    reference adapter's checking order, ``clears`` and ``final_rows`` the unconditional
    rewrite (slow path); ``distinct`` tells whether every deleted or written key is named
    once (otherwise only the slow path reproduces the reference semantics).
    """

    __slots__ = (
        "acks",
        "all_keys",
        "clears",
        "delete_checks",
        "deletes",
        "distinct",
        "enqueue",
        "final_records",
        "final_rows",
        "guard_keys",
        "guards",
        "inserts",
        "updates",
        "write_checks",
    )

    def __init__(self, commit: Commit) -> None:
        self.guards = commit.guards
        self.guard_keys = list(commit.guards)
        self.deletes = [
            {"b_kind": t.key[0], "b_key": t.key[1], "b_prev": t.version} for t in commit.deletes
        ]
        self.delete_checks = [((t.key[0], t.key[1]), t.version) for t in commit.deletes]
        self.updates: list[dict[str, Any]] = []
        self.inserts: list[dict[str, Any]] = []
        self.write_checks: list[tuple[RecordKey, int]] = []
        final: dict[RecordKey, dict[str, Any]] = {}
        records_by_key: dict[RecordKey, Record] = {}
        for record in commit.writes:
            key = key_of(record)
            row = record_row(key, record)
            final[key] = row
            records_by_key[key] = record
            self.write_checks.append((key, record.version - 1))
            if record.version == 1:
                self.inserts.append(row)
            else:
                self.updates.append(
                    {
                        "b_kind": key[0],
                        "b_key": key[1],
                        "b_prev": record.version - 1,
                        "b_root_id": row["root_id"],
                        "b_actor_type": row["actor_type"],
                        "b_actor_key": row["actor_key"],
                        "b_name": row["name"],
                        "b_created_at": row["created_at"],
                        "u_version": row["version"],
                        "u_data": row["data"],
                        "u_status": row["status"],
                    }
                )
        touched = [key for key, _ in self.delete_checks] + [key for key, _ in self.write_checks]
        self.distinct = len(set(touched)) == len(touched)
        self.all_keys = list(dict.fromkeys([*self.guard_keys, *touched]))
        self.clears = [{"b_kind": k[0], "b_key": k[1]} for k in dict.fromkeys(touched)]
        self.final_rows = list(final.values())
        self.final_records = list(records_by_key.values())
        self.acks = [{"b_id": message_id} for message_id in dict.fromkeys(commit.ack)]
        self.enqueue = [message_row(message) for message in commit.enqueue]


def record_row(key: RecordKey, record: Record) -> dict[str, Any]:
    """The ``sk_records`` row of *record* stored at *key*."""
    row: dict[str, Any] = {
        "kind": key[0],
        "key": key[1],
        "version": record.version,
        "data": encode_record(record),
        "root_id": None,
        "status": None,
        "actor_type": None,
        "actor_key": None,
        "name": None,
        "created_at": None,
    }
    if isinstance(record, ActionRecord):
        row["root_id"] = record.root_id
        row["status"] = record.status.value
        row["actor_type"] = record.actor_type
        row["actor_key"] = record.actor_key
        row["name"] = record.name
        row["created_at"] = float(record.created_at)
    return row


def message_row(message: Message) -> dict[str, Any]:
    """The ``sk_messages`` row of a freshly enqueued (unleased) *message*."""
    at = float(message.available_at)
    return {
        "id": message.id,
        "kind": message.kind.value,
        "action_id": message.action_id,
        "data": encode_message(message),
        "available_at": at,
        "owner": None,
        "lease_until": 0.0,
        "deliveries": 0,
        "due": at,
    }


def check_version(key: RecordKey, expected: int, actual: int) -> None:
    """Raise :class:`ConflictError` (``key``, ``expected``, ``actual``) unless the stored
    version *actual* is the *expected* one (``0``: absent)."""
    if actual != expected:
        raise ConflictError(
            f"{key[0]}:{key[1]} is at version {actual}, expected {expected}",
            key=(key[0], key[1]),
            expected=expected,
            actual=actual,
        )
