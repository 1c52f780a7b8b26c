"""Rows in and out of the SQL store: a commit turned into statement parameters, and
stored text turned back into records and messages.

Record text is the domain's :func:`~stepkernel.domain.encoding.encode_record`, message
text its :func:`~stepkernel.domain.encoding.encode_message`; the other columns are
copies of fields, kept for indexes (see :mod:`stepkernel.adapters.sql.schema`).

Bounded columns are checked here, before any statement runs: a value longer than its
column (a record key over :data:`~stepkernel.adapters.sql.schema.KEY_LENGTH`
characters, say) or holding a NUL character raises
:class:`~stepkernel.domain.errors.InvalidInputError` naming the column, on every
database alike -- SQLite would store it, PostgreSQL refuse it, MySQL truncate it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from sqlalchemy import String, Table

from stepkernel.adapters.sql.schema import messages, records
from stepkernel.domain.encoding import encode_message, encode_record
from stepkernel.domain.errors import ConflictError, InvalidInputError
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
    ``absent_guards`` (guards on version ``0`` of keys the commit does not write) and
    ``held`` (every key) are the placeholder rows of :mod:`.apply`.

    Statement rows are sorted by key (messages by id), so concurrent transactions lock
    rows in one order and deadlock less.
    """

    __slots__ = (
        "absent_guards",
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
        "held",
        "inserts",
        "updates",
        "write_checks",
    )

    def __init__(self, commit: Commit) -> None:
        self.guards = commit.guards
        self.guard_keys = list(commit.guards)
        self.deletes = sorted(
            ({"b_kind": t.key[0], "b_key": t.key[1], "b_prev": t.version} for t in commit.deletes),
            key=_by_key,
        )
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
                        "u_callbacks": row["callbacks"],
                    }
                )
        self.updates.sort(key=_by_key)
        self.inserts.sort(key=_by_row_key)
        touched = [key for key, _ in self.delete_checks] + [key for key, _ in self.write_checks]
        self.distinct = len(set(touched)) == len(touched)
        self.all_keys = list(dict.fromkeys([*self.guard_keys, *touched]))
        self.clears = [{"b_kind": k[0], "b_key": k[1]} for k in dict.fromkeys(touched)]
        written = set(touched)
        self.absent_guards = [
            {"b_kind": k[0], "b_key": k[1]}
            for k, expected in sorted(commit.guards.items())
            if expected == 0 and (k[0], k[1]) not in written
        ]
        self.held = [{"b_kind": k[0], "b_key": k[1]} for k in sorted(self.all_keys)]
        self.final_rows = list(final.values())
        self.final_records = list(records_by_key.values())
        self.acks = [{"b_id": message_id} for message_id in sorted(set(commit.ack))]
        self.enqueue = sorted((message_row(m) for m in commit.enqueue), key=_by_id)


_by_key = itemgetter("b_kind", "b_key")
_by_row_key = itemgetter("kind", "key")
_by_id = itemgetter("id")


def _limits(table: Table) -> tuple[tuple[str, int], ...]:
    """``(column, length)`` of every bounded string column of *table*."""
    return tuple(
        (column.name, column.type.length)
        for column in table.c
        if isinstance(column.type, String) and column.type.length
    )


_RECORD_LIMITS = _limits(records)
_MESSAGE_LIMITS = _limits(messages)


def check_bounds(table: str, row: dict[str, Any], limits: tuple[tuple[str, int], ...]) -> None:
    """Raise :class:`InvalidInputError` when a bounded column's value in *row* is too
    long for it or holds a NUL character."""
    for name, limit in limits:
        value = row[name]
        if value is None:
            continue
        if len(value) > limit or "\x00" in value:
            problem = "holds a NUL character" if "\x00" in value else f"is {len(value)} long"
            shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
            raise InvalidInputError(
                f"{table}.{name} value {shown} {problem}; the column holds at most "
                f"{limit} characters and no NUL",
                column=f"{table}.{name}",
                limit=limit,
                length=len(value),
            )


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
        "callbacks": None,
    }
    if isinstance(record, ActionRecord):
        row["root_id"] = record.root_id
        row["status"] = record.status.value
        row["actor_type"] = record.actor_type
        row["actor_key"] = record.actor_key
        row["name"] = record.name
        row["created_at"] = float(record.created_at)
        row["callbacks"] = record.callbacks
    check_bounds("sk_records", row, _RECORD_LIMITS)
    return row


def message_row(message: Message) -> dict[str, Any]:
    """The ``sk_messages`` row of a freshly enqueued (unleased) *message*."""
    at = float(message.available_at)
    row: dict[str, Any] = {
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
    check_bounds("sk_messages", row, _MESSAGE_LIMITS)
    return row


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
