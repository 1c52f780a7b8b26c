"""Picking and granting leases on one session (see ``SqlWorkflowStore.lease``).

Every function runs inside the caller's transaction (or, for :func:`pick_and_grant`, as
one statement in autocommit); decoding happens here so that a message that does not
decode is found before anything is handed out (and moved to the dead letters, see
:mod:`.dead`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stepkernel.adapters.queue_text import message_or_reason
from stepkernel.adapters.sql.dead import Undecodable
from stepkernel.adapters.sql.session import DirectSession, Session
from stepkernel.adapters.sql.statements import Statements, chunks
from stepkernel.ports.store import Delivery

__all__ = ["deliveries", "pick", "pick_and_grant"]

Row = tuple[str, Any, int]
"""``(message id, stored text, deliveries)``."""


def pick(
    session: Session, sql: Statements, ids: Sequence[str] | None, now: float, limit: int
) -> list[Row]:
    """Up to *limit* leasable messages: the due ones, earliest ``due`` first (locked,
    ``SKIP LOCKED`` where the database has it), or those of *ids* that are available and
    not leased, in *ids* order."""
    if ids is None:
        return [
            (message_id, data, int(count))
            for message_id, data, count in session.rows(sql.due, {"now": now, "lim": limit})
        ]
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Row] = {}
    for chunk in chunks(wanted):
        prepared, params = sql.messages_by_id(chunk, lease=True)
        for message_id, data, count, available_at, owner, lease_until in session.rows(
            prepared, params
        ):
            if float(available_at) > now or (owner is not None and float(lease_until) > now):
                continue
            found[message_id] = (message_id, data, int(count))
    return [found[i] for i in wanted if i in found][:limit]


def pick_and_grant(
    session: DirectSession, sql: str, *, worker: str, limit: int, now: float, until: float
) -> list[Row]:
    """PostgreSQL: pick and grant in one statement (:func:`.postgres.lease_sql`), rows
    in the order picked (``due``, then id), deliveries counted after the grant."""
    rows = [tuple(row) for row in session.fetch(sql, (now, limit, worker, until, until))]
    rows.sort(key=lambda row: (row[3], row[0]))
    return [(message_id, data, int(count)) for message_id, data, count, _due in rows]


def deliveries(rows: Iterable[Row], until: float) -> tuple[list[Delivery], list[Undecodable]]:
    """*rows* (deliveries already counting this one) as deliveries leased until
    *until*, and the ``(id, reason, text)`` of those that do not decode (for
    :meth:`.dead.DeadStatements.move`), in the order of *rows*."""
    out: list[Delivery] = []
    undecodable: list[Undecodable] = []
    for message_id, data, count in rows:
        found = message_or_reason(message_id, data)
        if isinstance(found, str):
            undecodable.append((message_id, found, str(data)))
        else:
            out.append(Delivery(message=found, deliveries=count, lease_until=until))
    return out, undecodable
