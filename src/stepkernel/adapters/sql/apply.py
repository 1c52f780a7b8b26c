"""Applying a :class:`~stepkernel.adapters.sql.rows.CommitPlan` inside a transaction.

Two paths with one outcome, the reference adapter's:

* :func:`apply_fast` (optimistic): version-checked ``DELETE``/``UPDATE`` and
  insert-if-absent statements whose affected-row counts prove every version held.  Any
  mismatch raises :class:`SlowPath`; the caller rolls back and takes the precise path.
* :func:`apply_checked` (precise): lock and read every version first, check them in the
  reference order (guards, deletes, writes) so a :class:`ConflictError` names the first
  conflicting key, then rewrite the rows unconditionally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import exc

from stepkernel.adapters.sql.rows import CommitPlan, check_version
from stepkernel.adapters.sql.session import Session
from stepkernel.adapters.sql.statements import Prepared, Statements, chunks, group_keys
from stepkernel.domain.errors import StoreUnavailableError
from stepkernel.domain.records import RecordKey

__all__ = ["SlowPath", "apply_checked", "apply_fast"]

_SLOW_PATH_ATTEMPTS = 3


class SlowPath(Exception):
    """The optimistic statements disagreed: roll back and redo the commit checking first."""


def _rowcount(
    session: Session, prepared: Prepared, rows: list[dict[str, Any]], *, batched: bool
) -> int:
    """Rows affected over *rows*: one ``executemany`` when the driver counts them
    reliably (*batched*), else one execution per row."""
    if batched or len(rows) == 1:
        return session.run_many(prepared, rows)
    return sum(session.run(prepared, row) for row in rows)


def apply_fast(session: Session, sql: Statements, plan: CommitPlan, *, batched: bool) -> None:
    """The optimistic path (see module); raises :class:`ConflictError` for a moved
    guard, :class:`SlowPath` when any other version check fails."""
    if plan.guards:
        stored = versions(session, sql, plan.guard_keys)
        for key, expected in plan.guards.items():
            check_version(key, expected, stored.get((key[0], key[1]), 0))
    deletes, updates, inserts = plan.deletes, plan.updates, plan.inserts
    if deletes and _rowcount(session, sql.delete, deletes, batched=batched) != len(deletes):
        raise SlowPath
    if updates and _rowcount(session, sql.update, updates, batched=batched) != len(updates):
        raise SlowPath
    if inserts:
        if sql.native_upsert:
            inserted = _rowcount(session, sql.insert_record, inserts, batched=batched)
            if inserted != len(inserts):
                raise SlowPath
        else:
            try:
                session.run_many(sql.insert_plain, inserts)
            except exc.IntegrityError:
                raise SlowPath from None  # the transaction is rolled back
    apply_queue(session, sql, plan)


def versions(session: Session, sql: Statements, keys: Iterable[RecordKey]) -> dict[RecordKey, int]:
    """The stored versions of *keys* (absent keys missing), locked for update."""
    stored: dict[RecordKey, int] = {}
    for chunk in chunks(sorted(set(keys))):
        prepared, params = sql.lock_versions(group_keys(chunk))
        for kind, key, version in session.rows(prepared, params):
            stored[(kind, key)] = int(version)
    return stored


def apply_checked(
    write: Callable[[], AbstractContextManager[Session]], sql: Statements, plan: CommitPlan
) -> None:
    """The precise path (see module), each attempt in a fresh transaction from *write*;
    retried when a concurrent insert of a key read as absent wins the race."""
    for _attempt in range(_SLOW_PATH_ATTEMPTS):
        try:
            with write() as session:
                stored = versions(session, sql, plan.all_keys)
                for key, expected in plan.guards.items():
                    check_version(key, expected, stored.get((key[0], key[1]), 0))
                for key, expected in plan.delete_checks:
                    check_version(key, expected, stored.get(key, 0))
                for key, expected in plan.write_checks:
                    check_version(key, expected, stored.get(key, 0))
                if plan.clears:
                    session.run_many(sql.delete_any, plan.clears)
                if plan.final_rows:
                    session.run_many(sql.insert_plain, plan.final_rows)
                apply_queue(session, sql, plan)
                return
        except exc.IntegrityError:
            continue  # a concurrent insert of a key read as absent: read again
    raise StoreUnavailableError("commit kept racing concurrent inserts", operation="commit")


def apply_queue(session: Session, sql: Statements, plan: CommitPlan) -> None:
    """Acknowledge and enqueue; an id already queued keeps the queued message."""
    if plan.acks:
        session.run_many(sql.ack, plan.acks)
    if not plan.enqueue:
        return
    if sql.native_upsert:
        session.run_many(sql.insert_message, plan.enqueue)
        return
    wanted = list(dict.fromkeys(row["id"] for row in plan.enqueue))
    present: set[str] = set()
    for chunk in chunks(wanted):
        prepared, params = sql.messages_by_id(chunk, lease=False)
        present.update(row[0] for row in session.rows(prepared, params))
    fresh: dict[str, dict[str, Any]] = {}
    for row in plan.enqueue:
        if row["id"] not in present and row["id"] not in fresh:
            fresh[row["id"]] = row
    if fresh:
        session.run_many(sql.insert_message, list(fresh.values()))
