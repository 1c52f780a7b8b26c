"""Applying a :class:`~stepkernel.adapters.sql.rows.CommitPlan` inside a transaction.

Two paths with one outcome, the reference adapter's:

* :func:`apply_fast` (optimistic): version-checked ``DELETE``/``UPDATE`` and
  insert-if-absent statements whose affected-row counts prove every version held.  Any
  mismatch raises :class:`SlowPath`; the caller rolls back and takes the precise path.
* :func:`apply_single` (optimistic, PostgreSQL): the same checks as the fast path, all
  in one statement run on its own (see
  :func:`~stepkernel.adapters.sql.postgres.single_commit_sql`): one round trip.  A
  failed check raises :class:`SlowPath` with nothing changed.
* :func:`apply_checked` (precise): lock and read every version first, check them in the
  reference order (guards, deletes, writes) so a :class:`ConflictError` names the first
  conflicting key, then rewrite the rows unconditionally.

Absent keys on PostgreSQL.  ``SELECT ... FOR UPDATE`` locks rows that exist; a guard on
an *absent* key (version ``0``) has no row to lock, and at ``READ COMMITTED`` a
concurrent transaction could create the record between the check and the commit (two
commits each guarding the absence of what the other creates would both succeed).  Where
the dialect needs it (:attr:`Statements.placeholders`), the commit first inserts a
*placeholder* row (version ``0``, empty data) for every absent key it relies on, and
deletes it again before ``COMMIT``: the placeholder is never visible to anyone else, but
while the transaction runs, the primary key makes every other insert of that key wait,
and a concurrent uncommitted insert (or delete) makes the placeholder wait for it.  The
locking read that follows sees the placeholder as version ``0``.  Only commits with
absent-key guards (fast path) or that take the precise path pay the two extra
statements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from operator import itemgetter
from typing import Any

from sqlalchemy import exc

from stepkernel.adapters.sql.postgres import (
    ARRAYS,
    CHECK_FAILED_SQLSTATE,
    SINGLE_MOST_ROWS,
    SINGLE_ROWS_INLINE,
    SingleShape,
)
from stepkernel.adapters.sql.races import sqlstate
from stepkernel.adapters.sql.rows import CommitPlan, check_version
from stepkernel.adapters.sql.schema import messages, records
from stepkernel.adapters.sql.session import DirectSession, Session
from stepkernel.adapters.sql.statements import Prepared, Statements, chunks, group_keys
from stepkernel.domain.errors import StoreUnavailableError
from stepkernel.domain.records import RecordKey

__all__ = [
    "SlowPath",
    "apply_checked",
    "apply_fast",
    "apply_single",
    "name_conflict",
    "single_params",
]

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


def apply_fast(
    session: Session, sql: Statements, plan: CommitPlan, *, batched: bool, notify: bool
) -> None:
    """The optimistic path (see module); raises :class:`ConflictError` for a moved
    guard, :class:`SlowPath` when any other version check fails.  *notify* wakes
    listening workers when the commit enqueues messages (see :func:`apply_queue`)."""
    hold = sql.placeholders and bool(plan.absent_guards)
    if hold:
        session.run_many(sql.hold_absent, plan.absent_guards)
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
    apply_queue(session, sql, plan, notify=notify)
    if hold:
        session.run_many(sql.drop_absent, plan.absent_guards)


_DELETE_PARAMS = itemgetter("b_kind", "b_key", "b_prev")
_UPDATE_PARAMS = itemgetter(
    "u_version",
    "u_data",
    "u_status",
    "u_callbacks",
    "b_kind",
    "b_key",
    "b_prev",
    "b_root_id",
    "b_actor_type",
    "b_actor_key",
    "b_name",
    "b_created_at",
)
_RECORD_COLUMNS = tuple(column.name for column in records.c)
_MESSAGE_COLUMNS = tuple(column.name for column in messages.c)


def single_params(plan: CommitPlan) -> tuple[SingleShape, list[Any]] | None:
    """The shape and parameters of *plan*'s single statement (see
    :func:`~stepkernel.adapters.sql.postgres.single_commit_sql`; ``notify`` left
    ``False``), or ``None`` when the plan needs the usual path: guards (they lock rows
    first), a key written twice, a message both acknowledged and enqueued (the usual
    path deletes, then inserts it), or more than
    :data:`~stepkernel.adapters.sql.postgres.SINGLE_MOST_ROWS` deletes or updates."""
    if plan.guards or not plan.distinct:
        return None
    if len(plan.deletes) > SINGLE_MOST_ROWS or len(plan.updates) > SINGLE_MOST_ROWS:
        return None
    acks = [row["b_id"] for row in plan.acks]
    if acks and plan.enqueue and not set(acks).isdisjoint(row["id"] for row in plan.enqueue):
        return None
    params: list[Any] = []
    for row in plan.deletes:
        params.extend(_DELETE_PARAMS(row))
    for row in plan.updates:
        params.extend(_UPDATE_PARAMS(row))
    inserts = _bind(params, plan.inserts, _RECORD_COLUMNS)
    if len(acks) > SINGLE_ROWS_INLINE:
        params.append(acks)
    else:
        params.extend(acks)
    first: dict[str, dict[str, Any]] = {}
    for row in plan.enqueue:  # an id enqueued twice: the first row, as the usual path keeps
        first.setdefault(str(row["id"]), row)
    enqueues = _bind(params, list(first.values()), _MESSAGE_COLUMNS)
    if inserts == ARRAYS:
        params.append(len(plan.inserts))
    acked = ARRAYS if len(acks) > SINGLE_ROWS_INLINE else len(acks)
    return (len(plan.deletes), len(plan.updates), inserts, acked, enqueues, False), params


def _bind(params: list[Any], rows: list[dict[str, Any]], columns: tuple[str, ...]) -> int:
    """Append *rows*' *columns* to *params*, row by row or (more than
    :data:`~stepkernel.adapters.sql.postgres.SINGLE_ROWS_INLINE` rows) as one array per
    column; the shape's count (:data:`~stepkernel.adapters.sql.postgres.ARRAYS`)."""
    if len(rows) > SINGLE_ROWS_INLINE:
        params.extend([row[name] for row in rows] for name in columns)
        return ARRAYS
    for row in rows:
        params.extend(row[name] for name in columns)
    return len(rows)


def apply_single(
    session: DirectSession,
    sql: Statements,
    shape: SingleShape,
    params: list[Any],
    *,
    notify: bool,
) -> None:
    """Run a commit as one statement of *shape* with *params* (:func:`single_params`)
    on *session*, which must not be in a transaction (the statement is its own);
    *notify* wakes listening workers when it enqueues.  Raises :class:`SlowPath`,
    having changed nothing, when a version check fails."""
    if notify and shape[4]:
        shape = (*shape[:5], True)
    try:
        session.execute(sql.single_commit(shape), params)
    except exc.DBAPIError as error:
        if sqlstate(error) == CHECK_FAILED_SQLSTATE:
            raise SlowPath from None
        raise


def name_conflict(session: Session, sql: Statements, plan: CommitPlan) -> None:
    """After a failed :func:`apply_single`: read the stored versions of *plan*'s keys (one
    statement, waiting for rows being written) and raise :class:`ConflictError` for the
    first moved one, in the reference order (deletes, then writes).  Returns when every
    version matches (the race resolved): the caller then takes the precise path."""
    stored = versions(session, sql, plan.all_keys)
    for key, expected in plan.delete_checks:
        check_version(key, expected, stored.get(key, 0))
    for key, expected in plan.write_checks:
        check_version(key, expected, stored.get(key, 0))


def versions(session: Session, sql: Statements, keys: Iterable[RecordKey]) -> dict[RecordKey, int]:
    """The stored versions of *keys* (absent keys missing), locked for update."""
    stored: dict[RecordKey, int] = {}
    for chunk in chunks(sorted(set(keys))):
        prepared, params = sql.lock_versions(group_keys(chunk))
        for kind, key, version in session.rows(prepared, params):
            stored[(kind, key)] = int(version)
    return stored


def apply_checked(
    write: Callable[[], AbstractContextManager[Session]],
    sql: Statements,
    plan: CommitPlan,
    *,
    notify: bool,
) -> None:
    """The precise path (see module), each attempt in a fresh transaction from *write*;
    retried when a concurrent insert of a key read as absent wins the race (not on
    PostgreSQL, where placeholders hold every absent key first)."""
    for _attempt in range(_SLOW_PATH_ATTEMPTS):
        try:
            with write() as session:
                if sql.placeholders:
                    session.run_many(sql.hold_absent, plan.held)
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
                apply_queue(session, sql, plan, notify=notify)
                if sql.placeholders:
                    session.run_many(sql.drop_absent, plan.held)
                return
        except exc.IntegrityError:
            continue  # a concurrent insert of a key read as absent: read again
    raise StoreUnavailableError("commit kept racing concurrent inserts", operation="commit")


def apply_queue(session: Session, sql: Statements, plan: CommitPlan, *, notify: bool) -> None:
    """Acknowledge and enqueue; an id already queued keeps the queued message.  With
    *notify* and messages to enqueue, also ``NOTIFY`` the listening workers (delivered
    by the database when, and only if, the transaction commits)."""
    if plan.acks:
        session.run_many(sql.ack, plan.acks)
    if not plan.enqueue:
        return
    if notify and sql.notify is not None:
        session.run(sql.notify, {})
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
