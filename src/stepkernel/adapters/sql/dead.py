"""Dead letters in SQL: moving a queued message that does not decode out of the queue.

A message row whose ``data`` does not decode is found by the lease that picks it; it is
copied to ``sk_dead_messages`` and deleted from ``sk_messages`` so that it never blocks
the queue (see :class:`~stepkernel.ports.store.DeadLetter`).  The move is three
statements, run in the caller's transaction: forget an older dead letter of the same id,
copy the row (insert-if-absent), delete it.  Each matches the message only while its
stored text is still the text the lease saw: a move that comes late (its worker stalled
while another moved the message and the recovery sweep queued a fresh one under the same
deterministic id) finds nothing and changes nothing, and two movers racing each other
copy it once.  Not on the hot path: a healthy queue never runs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Integer, bindparam, exists, literal_column, select
from sqlalchemy.engine import Dialect

from stepkernel.adapters.sql.schema import dead_messages, messages
from stepkernel.adapters.sql.session import Session
from stepkernel.adapters.sql.statements import Prepared, insert_if_absent
from stepkernel.ports.store import DeadLetter

__all__ = ["DeadStatements", "Undecodable"]

Undecodable = tuple[str, str, str]
"""``(message id, reason, stored text seen)`` of a queued message that did not decode."""


class DeadStatements:
    """The dead-letter statements, prepared for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        d, m = dead_messages, messages
        seen = (m.c.id == bindparam("b_id"), m.c.data == bindparam("b_seen"))
        queued = exists().where(*seen)
        self.forget = Prepared(d.delete().where(d.c.id == bindparam("b_id"), queued), dialect)
        self.copy = Prepared(
            insert_if_absent(dialect, d, ("id",))[0].from_select(
                ["id", "action_id", "data", "reason", "dead_at", "deliveries"],
                select(
                    m.c.id,
                    m.c.action_id,
                    m.c.data,
                    bindparam("u_reason"),
                    bindparam("u_at"),
                    m.c.deliveries + bindparam("u_extra", type_=Integer),
                ).where(*seen),
            ),
            dialect,
        )
        self.remove = Prepared(m.delete().where(*seen), dialect)
        self.drop = Prepared(d.delete().where(d.c.id == bindparam("b_id")), dialect)
        self.count = Prepared(
            select(literal_column("count(*)")).select_from(d).where(d.c.id == bindparam("b_id")),
            dialect,
        )
        self.list = Prepared(
            select(
                d.c.id, d.c.action_id, d.c.data, d.c.reason, d.c.dead_at, d.c.deliveries
            ).order_by(d.c.dead_at, d.c.id),
            dialect,
        )

    def move(
        self, session: Session, undecodable: Sequence[Undecodable], *, at: float, extra: int
    ) -> None:
        """Move the queued messages *undecodable* to the dead letters, in *session*'s
        transaction.  *extra* is added to the stored ``deliveries`` (1 when the lease
        that found them has not counted itself in the row)."""
        if not undecodable:
            return
        keys = [{"b_id": message_id, "b_seen": seen} for message_id, _, seen in undecodable]
        session.run_many(self.forget, keys)
        session.run_many(
            self.copy,
            [
                {"b_id": i, "b_seen": seen, "u_reason": reason, "u_at": at, "u_extra": extra}
                for i, reason, seen in undecodable
            ],
        )
        session.run_many(self.remove, keys)

    def read(self, session: Session) -> list[DeadLetter]:
        """Every dead letter, oldest first, then by id."""
        return [
            DeadLetter(
                message_id=message_id,
                action_id=action_id,
                data=str(data),
                reason=str(reason),
                dead_at=float(dead_at),
                deliveries=int(deliveries),
            )
            for message_id, action_id, data, reason, dead_at, deliveries in session.rows(
                self.list, {}
            )
        ]

    def drop_all(self, session: Session, ids: Iterable[str]) -> int:
        """Delete the dead letters *ids*; how many there were (counted first: not every
        driver reports the rows an ``executemany`` touched)."""
        found = 0
        for message_id in dict.fromkeys(ids):
            ((count,),) = session.rows(self.count, {"b_id": message_id})
            if count:
                session.run(self.drop, {"b_id": message_id})
                found += int(count)
        return found
