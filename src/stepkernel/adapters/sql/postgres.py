"""PostgreSQL commands run as one statement each, in autocommit, through psycopg 3.

:func:`single_commit_sql` applies a whole common commit in one round trip;
:func:`lease_sql` picks due messages with ``FOR UPDATE SKIP LOCKED`` and grants them in
the same statement.  Both are rendered once per shape for a ``%s`` driver (see
:class:`~stepkernel.adapters.sql.statements.Statements`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Double, Integer, String, Table, Text
from sqlalchemy.engine import Dialect

from stepkernel.adapters.sql.schema import NOTIFY_CHANNEL, messages, records

__all__ = [
    "ARRAYS",
    "CHECK_FAILED_SQLSTATE",
    "SINGLE_MOST_ROWS",
    "SINGLE_ROWS_INLINE",
    "SingleShape",
    "lease_sql",
    "single_commit_sql",
]

SINGLE_MOST_ROWS = 8
"""Most version-checked deletes, and most updates, of a single-statement commit (each is
one part of the statement; bigger commits take the usual path)."""

SingleShape = tuple[int, int, int, int, int, bool]
"""``(deletes, updates, inserts, acks, enqueues, notify)`` of a single-statement commit:
the numbers of version-checked deletes and updates (one ``WITH`` part each), and of
inserted records, acknowledged and enqueued messages, each bound row by row when at most
:data:`SINGLE_ROWS_INLINE`, or given as :data:`ARRAYS` (bound as one array per column)."""

ARRAYS = -1
"""A :data:`SingleShape` count meaning "any number of rows, bound as arrays"."""

SINGLE_ROWS_INLINE = 2
"""Most inserted records (or acknowledged, or enqueued messages) a single-statement
commit binds row by row; more are bound as arrays.  Row by row keeps the statement short
enough for the driver's caches and is the cheaper plan for the server; arrays keep one
shape for any number of rows (a fan-out) instead of a long text parsed at every call."""

CHECK_FAILED_SQLSTATE = "22012"
"""``division_by_zero``: what :func:`single_commit_sql` raises when a version check fails."""

_IDENTITY = ("root_id", "actor_type", "actor_key", "name", "created_at")
"""Action columns an update only checks (see ``Statements.update``)."""


def single_commit_sql(dialect: Dialect, shape: SingleShape) -> str:
    """One PostgreSQL statement applying a whole commit, for a ``%s`` driver.

    A data-modifying ``WITH``: one version-checked ``DELETE`` per deleted record, one
    version-checked ``UPDATE`` per updated record (both ``RETURNING 1``, in the order
    given: key order, as the usual path locks them), one insert-if-absent of the new
    records (``RETURNING 1``), one ``DELETE`` of the acknowledged messages and one
    insert-if-absent of the enqueued ones; rows are bound one by one, or as one array
    per column (:data:`ARRAYS`, then inserted from ``unnest``, ids matched with
    ``= ANY``; arrays travel in binary, ``%b``: the driver's text form escapes every
    element, several times slower).  The final ``SELECT`` divides by whether every delete, update and insert
    hit its row: when one did not (a version moved, a key exists), the statement fails
    with :data:`CHECK_FAILED_SQLSTATE` and, run on its own (autocommit), changes nothing.
    With *notify* it also runs ``pg_notify`` (sent when the statement commits).
    Parameters, in order: per delete ``kind, key, prev``; per update ``version, data,
    status, callbacks, kind, key, prev`` and the identity columns; the inserted records' columns
    (row by row, or one array per column); the acknowledged ids (one by one, or an
    array); the enqueued messages' columns; with :data:`ARRAYS` inserts, last, the
    number of inserted records.
    """
    deletes, updates, inserts, acks, enqueues, notify = shape
    quote = dialect.identifier_preparer.quote
    r, m = quote(records.name), quote(messages.name)
    kind, key, version, id_ = quote("kind"), quote("key"), quote("version"), quote("id")
    where = f"{kind} = %s AND {key} = %s AND {version} = %s"
    parts: list[str] = []
    counted: list[str] = []
    for n in range(deletes):
        parts.append(f"d{n} AS (DELETE FROM {r} WHERE {where} RETURNING 1)")
        counted.append(f"(SELECT count(*) FROM d{n})")
    identity = "".join(f" AND {quote(c)} IS NOT DISTINCT FROM %s" for c in _IDENTITY)
    for n in range(updates):
        parts.append(
            f"u{n} AS (UPDATE {r} SET {version} = %s, {quote('data')} = %s, "
            f"{quote('status')} = %s, {quote('callbacks')} = %s WHERE {where}{identity} "
            "RETURNING 1)"
        )
        counted.append(f"(SELECT count(*) FROM u{n})")
    if inserts:
        parts.append(
            f"i AS (INSERT INTO {r} {_rows(dialect, records, inserts)} "
            f"ON CONFLICT ({kind}, {key}) DO NOTHING RETURNING 1)"
        )
        counted.append("(SELECT count(*) FROM i)")
    if acks:
        ids = (
            f"= ANY(%b::{_element(messages.c.id)}[])"
            if acks == ARRAYS
            else "IN (" + ", ".join(["%s"] * acks) + ")"
        )
        parts.append(f"a AS (DELETE FROM {m} WHERE {id_} {ids})")
    if enqueues:
        parts.append(
            f"e AS (INSERT INTO {m} {_rows(dialect, messages, enqueues)} "
            f"ON CONFLICT ({id_}) DO NOTHING)"
        )
    expected = str(deletes + updates + max(inserts, 0))
    if inserts == ARRAYS:
        expected += " + %s::integer"
    hits = " + ".join(counted) or "0"
    select = f"SELECT 1 / (({hits}) = {expected})::int"
    if notify:
        select += f", pg_notify('{NOTIFY_CHANNEL}', '')"
    return ("WITH " + ",\n".join(parts) + "\n" if parts else "") + select


def _rows(dialect: Dialect, table: Table, count: int) -> str:
    """``(columns) VALUES (%s, ...), ...`` for *count* rows of *table*, or for
    :data:`ARRAYS` ``(columns) SELECT * FROM unnest(%s::type[], ...)``."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(column.name) for column in table.c)
    if count != ARRAYS:
        row = "(" + ", ".join(["%s"] * len(table.c)) + ")"
        return f"({names}) VALUES " + ", ".join([row] * count)
    arrays = ", ".join(f"%b::{_element(column)}[]" for column in table.c)
    return f"({names}) SELECT * FROM unnest({arrays})"


def _element(column: Column[Any]) -> str:
    """The PostgreSQL array element type binding *column*'s values: unbounded (a cast
    to ``varchar(n)`` would silently truncate; :mod:`.rows` checks lengths first)."""
    if isinstance(column.type, String) and not isinstance(column.type, Text):
        return "varchar"
    if isinstance(column.type, Text):
        return "text"
    if isinstance(column.type, Integer):
        return "integer"
    if isinstance(column.type, Double):
        return "double precision"
    raise TypeError(f"no array element type for {column.type!r}")


def lease_sql(dialect: Dialect) -> str:
    """One statement leasing due messages: the earliest ``due`` first (ties by id), at
    most ``LIMIT`` of them, rows another worker is leasing skipped (``FOR UPDATE SKIP
    LOCKED``), each granted (owner, lease end, ``due`` moved to the lease end, one more
    delivery) and returned as ``id, data, deliveries`` (after the grant) and the ``due``
    it had, to sort on.  Parameters: now, limit, owner, lease end, lease end.

    The granted rows are found by primary key (``id = ANY(ARRAY(...))``): an
    ``UPDATE ... FROM picked`` join is planned as a hash join over a scan of the whole
    queue, whose cost grows with the queue."""
    quote = dialect.identifier_preparer.quote
    m = quote(messages.name)
    id_, due, deliveries = quote("id"), quote("due"), quote("deliveries")
    return (
        f"WITH picked AS (SELECT {id_}, {due} FROM {m} WHERE {due} <= %s "
        f"ORDER BY {due}, {id_} LIMIT %s FOR UPDATE SKIP LOCKED), "
        f"granted AS (UPDATE {m} AS g SET {quote('owner')} = %s, "
        f"{quote('lease_until')} = %s, {due} = %s, {deliveries} = g.{deliveries} + 1 "
        f"WHERE g.{id_} = ANY(ARRAY(SELECT {id_} FROM picked)) "
        f"RETURNING g.{id_}, g.{quote('data')}, g.{deliveries}) "
        f"SELECT granted.{id_}, granted.{quote('data')}, granted.{deliveries}, picked.{due} "
        f"FROM granted JOIN picked ON picked.{id_} = granted.{id_}"
    )
