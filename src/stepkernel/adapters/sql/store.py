"""The SQL store: records and the leased queue in one database, via SQLAlchemy Core.

Records are stored as the domain's :func:`~stepkernel.domain.encoding.encode_record`
text and rebuilt with :func:`~stepkernel.domain.encoding.decode_record`; messages as
:func:`~stepkernel.domain.encoding.encode_message` text.  The SQL is built with
SQLAlchemy Core and compiled once per dialect (:mod:`.statements`); connections come
from the engine's pool (:mod:`.session`).  See :mod:`.schema` for the tables and
:mod:`.engine` for SQLite engines.

Dialects: SQLite (default, see :func:`sqlite_engine`), PostgreSQL and MySQL/MariaDB use
their native insert-if-absent (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``); any other
dialect falls back to portable statements.  PostgreSQL (psycopg 3, see
:func:`~stepkernel.adapters.sql.server.server_engine`) runs at ``READ COMMITTED``: leases
take rows with ``FOR UPDATE SKIP LOCKED``, absent keys are held by placeholders
(:mod:`.apply`), lost races are redone (:mod:`.races`) and idle workers wait for
``NOTIFY`` (:mod:`.listen`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import Engine

from stepkernel.adapters.decoded import DecodedRecords
from stepkernel.adapters.queue_text import decodable
from stepkernel.adapters.sql.apply import (
    SlowPath,
    apply_checked,
    apply_fast,
    apply_single,
    name_conflict,
    single_params,
)
from stepkernel.adapters.sql.dead import Undecodable
from stepkernel.adapters.sql.engine import (
    sqlite_engine,
)
from stepkernel.adapters.sql.leasing import Row, deliveries, pick, pick_and_grant
from stepkernel.adapters.sql.plumbing import SqlPlumbing
from stepkernel.adapters.sql.rows import CommitPlan
from stepkernel.adapters.sql.session import DirectSession, core_rows
from stepkernel.adapters.sql.statements import (
    CHUNK,
    actions_query,
    chunks,
    group_keys,
    status_counts,
)
from stepkernel.adapters.sql.versions import create_schema
from stepkernel.domain.encoding import decode_record
from stepkernel.domain.errors import StoreUnavailableError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ACTION, ActionRecord, Record, RecordKey
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.store import ActionQuery, Commit, DeadLetter, Delivery, WorkflowStore

__all__ = ["SqlWorkflowStore", "sqlite_engine"]

log = logging.getLogger(__name__)


class SqlWorkflowStore(SqlPlumbing, WorkflowStore):
    """A :class:`WorkflowStore` in a SQL database reached through a SQLAlchemy engine.

    The engine is the caller's (configured, pooled, not in ``AUTOCOMMIT``); :meth:`close`
    does not dispose it.  With ``create=True`` (default) the tables are created if
    missing and the schema version is checked
    (:func:`~stepkernel.adapters.sql.versions.create_schema`); ``create=False`` touches
    nothing (schemas installed by your own migrations: check them with
    :func:`~stepkernel.adapters.sql.versions.check_schema`).
    Statements run straight on the pooled DBAPI cursor, compiled once per dialect;
    ``direct=False`` (or a driver whose compiled form cannot be run as is) runs them
    through ``Connection.execute`` instead: same SQL, same guarantees, slower.

    Round trips per transition (:meth:`commit`), all in one transaction: ``BEGIN``;
    one ``SELECT ... FOR UPDATE`` of the guarded versions (only when there are guards);
    one ``executemany`` each for deletes, version-checked updates (``v > 1``), inserts
    (``v == 1``), acknowledgements and enqueued messages (only those present);
    ``COMMIT``.  A typical step (write one record, ack one message, enqueue one) is
    ``BEGIN`` + 3 statements + ``COMMIT``.  Only when a version check fails is the
    transaction rolled back and redone with one locking ``SELECT`` of every version
    first, to name the conflicting key (or apply the commit if the race resolved).
    :meth:`load` is one ``SELECT`` for every key of every kind (one per 256 keys, then
    in a read transaction), with no transaction of its own: one statement is atomic.
    :meth:`lease` is ``BEGIN`` + one indexed range ``SELECT`` on ``due`` + one
    ``executemany`` ``UPDATE`` + ``COMMIT``; :meth:`next_due` and :meth:`queued` one
    ``SELECT``.

    On SQLite the store serialises its own write transactions per connection pool with an
    in-process lock (threads then never wait in SQLite's sleeping busy handler), and every
    transaction when the pool is one shared connection (``:memory:``).  On a SQLite file
    (:func:`sqlite_engine`) every thread keeps one connection
    (:mod:`~stepkernel.adapters.sql.pinned`), so little but SQLite's own work happens
    while the write lock is held.

    On PostgreSQL through psycopg a commit without guards that names every key once
    (the common one: a step's writes, acknowledgement and enqueued messages) is **one
    round trip**: one statement run on its own, in autocommit, that does every
    version-checked change, the acknowledgements, the enqueues and the ``pg_notify``
    (:func:`~stepkernel.adapters.sql.postgres.single_commit_sql`; at most
    :data:`~stepkernel.adapters.sql.postgres.SINGLE_MOST_ROWS` deletes and updates).
    When one of its version checks fails it changes nothing; one locking read of the
    versions then names the conflict (:class:`ConflictError` with ``key``,
    ``expected``, ``actual``), or, if the race resolved meanwhile, the commit takes the
    precise path below.  Other commits take the transaction described above, where a
    commit holding absent guarded keys adds two statements (a placeholder insert and
    delete, see :mod:`.apply`) and a commit that enqueues adds one
    ``SELECT pg_notify(...)`` (``notify=False`` leaves it out everywhere: idle workers
    then find new messages by polling).  :meth:`lease` is one statement too
    (:func:`~stepkernel.adapters.sql.postgres.lease_sql`: pick with ``FOR UPDATE SKIP
    LOCKED`` and grant).  A lone read runs in autocommit (no ``BEGIN``), and every
    thread keeps one pooled connection for all of this
    (:mod:`~stepkernel.adapters.sql.pinned`).
    :meth:`wait_for_work` waits on a dedicated ``LISTEN`` connection (:mod:`.listen`).
    A transaction the database aborts as a deadlock or serialization failure is redone
    (up to :data:`~stepkernel.adapters.sql.races.ATTEMPTS` tries, ``retries`` counts
    them); a commit that keeps losing raises :class:`ConflictError` (``key`` ``None``,
    ``sqlstate`` set), any other operation :class:`StoreUnavailableError`.

    Driver errors become :class:`StoreUnavailableError`; nothing from SQLAlchemy or the
    driver escapes.  Values too long for their column raise
    :class:`~stepkernel.domain.errors.InvalidInputError` before anything is sent
    (:mod:`.rows`).
    A stored record that does not decode raises :class:`CorruptRecordError` with its
    ``key``, ``reason`` and stored ``version``; a message, with key ``("message", id)``.
    ``commits`` counts successful :meth:`commit` calls.  After a lost connection (server
    restart, killed backend) the call fails with :class:`StoreUnavailableError` and the
    pool replaces its connections, so the next call reconnects.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        create: bool = True,
        direct: bool = True,
        notify: bool = True,
    ) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a stepkernel Clock, not {type(clock).__name__}")
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, not {type(create).__name__}")
        super().__init__(engine, direct=direct, notify=notify)
        self.clock = clock if clock is not None else SystemClock()
        # (kind, key) -> (stored text, record): a load that reads back exactly the text
        # remembered reuses the (immutable) record instead of decoding and verifying it
        # again.  Any other text, e.g. tampered bytes, is decoded and checked as usual.
        self._decoded = DecodedRecords()
        if create:
            create_schema(engine)

    # -- records -------------------------------------------------------------------------

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        """Every key's record or ``None``; one ``SELECT`` (per 256 keys).

        A stored text that does not decode raises :class:`CorruptRecordError` carrying
        the key and the stored ``version``."""
        self._check_open()
        found: dict[RecordKey, Record | None] = dict.fromkeys(keys)
        if not found:
            return found
        wanted = list(found)
        sql = self._sql
        try:
            with self._read_lock, self._read(atomic=len(wanted) > CHUNK) as session:
                rows: list[Sequence[Any]] = []
                for chunk in chunks(wanted):
                    prepared, params = sql.load(group_keys(chunk))
                    rows.extend(session.rows(prepared, params))
        except self._errors as error:
            raise self._unavailable("load", error) from error
        decoded = self._decoded
        for kind, key, version, data in rows:
            record_key = (kind, key)
            record = decoded.get(record_key, data)
            if record is None:
                record = decode_record(record_key, data, version=int(version))
                decoded.remember(record_key, data, record)
            found[record_key] = record
        return found

    def commit(self, commit: Commit) -> None:
        """Apply *commit* atomically or raise :class:`ConflictError` changing nothing."""
        self._check_open()
        if commit.empty and not commit.guards:
            self._count()
            return
        plan = CommitPlan(commit)
        notify = self._notify and bool(plan.enqueue)
        single = single_params(plan) if self._single else None

        def attempt() -> None:
            with self._write_lock:
                try:
                    if single is not None:
                        with self._lone() as lone:
                            assert isinstance(lone, DirectSession)
                            try:
                                apply_single(lone, self._sql, *single, notify=notify)
                                return
                            except SlowPath:
                                name_conflict(lone, self._sql, plan)
                        raise SlowPath
                    if not plan.distinct:
                        raise SlowPath
                    with self._write() as session:
                        apply_fast(
                            session,
                            self._sql,
                            plan,
                            batched=self._batched_rowcount,
                            notify=notify,
                        )
                except SlowPath:
                    apply_checked(self._write, self._sql, plan, notify=notify)

        self._retrying("commit", attempt)
        for row, record in zip(plan.final_rows, plan.final_records, strict=True):
            self._decoded.remember((row["kind"], row["key"]), row["data"], record)
        self._count()

    # -- queue ---------------------------------------------------------------------------

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to *limit* due messages, earliest ``due`` first (or in *ids* order).

        A picked message that does not decode is moved to the dead letters in the same
        transaction (see :mod:`.dead`) and the rest of the batch is leased."""
        self._check_open()
        if limit <= 0:
            return []
        if self._listener is not None and self._notify:
            self._listener.drain()  # before the SELECT: see Listener.drain
        now = float(self.clock.now())
        until = now + lease_seconds
        if ids is None and self._single:  # psycopg, direct, in autocommit (see _lone)
            return self._lease_one(worker, limit, now, until)

        def attempt() -> list[Delivery]:
            with self._write_lock, self._write() as session:
                rows = pick(session, self._sql, ids, now, limit)
                # Decoded before granting: a corrupt message is not handed out.
                out, undecodable = deliveries([(i, data, n + 1) for i, data, n in rows], until)
                self._dead.move(session, undecodable, at=now, extra=1)
                if out:
                    grants = [
                        {"b_id": d.message.id, "u_owner": worker, "u_until": until} for d in out
                    ]
                    session.run_many(self._sql.grant, grants)
            self._report_dead(undecodable)
            return out

        return self._retrying("lease", attempt)

    def _lease_one(self, worker: str, limit: int, now: float, until: float) -> list[Delivery]:
        """PostgreSQL: pick and grant in one statement, in autocommit (one round trip).
        A message that does not decode is then moved to the dead letters in a
        transaction of its own; should that fail, it is logged, the rest of the batch is
        still handed out, and the next lease after this one runs out moves it."""
        sql = self._sql.lease_one
        assert sql is not None

        def attempt() -> list[Row]:
            with self._lone() as session:
                assert isinstance(session, DirectSession)
                return pick_and_grant(
                    session, sql, worker=worker, limit=limit, now=now, until=until
                )

        out, undecodable = deliveries(self._retrying("lease", attempt), until)
        if undecodable:

            def move() -> None:
                with self._write() as session:
                    self._dead.move(session, undecodable, at=now, extra=0)

            try:
                self._retrying("lease", move)
            except StoreUnavailableError as error:
                log.warning("moving undecodable messages failed (moved later): %s", error)
                return out
            self._report_dead(undecodable)
        return out

    def _report_dead(self, undecodable: Sequence[Undecodable]) -> None:
        for message_id, reason, _ in undecodable:
            log.error(
                "message %s does not decode (%s): moved to the dead letters", message_id, reason
            )

    def ack(self, ids: Iterable[str]) -> None:
        """Delete the messages *ids*; unknown ids are ignored."""
        self._check_open()
        params = [{"b_id": message_id} for message_id in dict.fromkeys(ids)]
        if params:
            self._write_many("ack", self._sql.ack, params)

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        """Clear *worker*'s leases on *ids*: ``due`` falls back to ``available_at``."""
        self._check_open()
        params = [{"b_id": i, "b_owner": worker} for i in dict.fromkeys(ids)]
        if params:
            self._write_many("release", self._sql.release, params, notify=self._notify)

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        """Move *worker*'s leases on *ids* to ``now + lease_seconds``."""
        self._check_open()
        until = float(self.clock.now()) + lease_seconds
        params = [{"b_id": i, "b_owner": worker, "u_until": until} for i in dict.fromkeys(ids)]
        if params:
            self._write_many("extend", self._sql.extend, params)

    def next_due(self) -> float | None:
        """``MIN(due)`` over the queue, ``None`` when it is empty."""
        self._check_open()
        try:
            with self._read_lock, self._read(atomic=False) as session:
                ((value,),) = session.rows(self._sql.next_due, {})
        except self._errors as error:
            raise self._unavailable("next_due", error) from error
        return None if value is None else float(value)

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        """Queued messages (leased or not), ordered by ``available_at`` then id."""
        self._check_open()
        sql = self._sql
        try:
            with self._read_lock, self._read(atomic=False) as session:
                if action_id is None:
                    rows = session.rows(sql.queued, {})
                else:
                    rows = session.rows(sql.queued_action, {"action": action_id})
        except self._errors as error:
            raise self._unavailable("queued", error) from error
        return decodable(rows)

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter (see :mod:`.dead`), oldest first, then by id."""
        self._check_open()
        try:
            with self._read_lock, self._read(atomic=False) as session:
                return self._dead.read(session)
        except self._errors as error:
            raise self._unavailable("dead_letters", error) from error

    def drop_dead_letters(self, ids: Iterable[str]) -> int:
        """Forget the dead letters *ids*; how many there were."""
        self._check_open()
        wanted = list(ids)

        def attempt() -> int:
            with self._write_lock, self._write() as session:
                return self._dead.drop_all(session, wanted)

        return self._retrying("drop_dead_letters", attempt)

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        """Actions matching *query* via the indexed columns, by ``created_at`` then id."""
        self._check_open()
        stmt = actions_query(query)
        try:
            with self._read_lock:
                rows = core_rows(self._engine, stmt)
        except self._errors as error:
            raise self._unavailable("find_actions", error) from error
        found: list[ActionRecord] = []
        for key, version, data in rows:
            record = decode_record((ACTION, key), data, version=int(version))
            if isinstance(record, ActionRecord):
                found.append(record)
        if query.callbacks is not None:  # rows of schema version 1 have no column to match
            found = [record for record in found if record.callbacks == query.callbacks]
            if query.limit is not None:
                found = found[: max(query.limit, 0)]
        return found

    def count_actions(self) -> dict[ActionStatus, int]:
        """Actions per status: one ``GROUP BY`` over the status column, nothing decoded."""
        self._check_open()
        try:
            with self._read_lock:
                rows = core_rows(self._engine, status_counts())
        except self._errors as error:
            raise self._unavailable("count_actions", error) from error
        return {ActionStatus(status): int(count) for status, count in rows if count}

    def wait_for_work(self, timeout: float) -> None:
        """Wait until another transaction enqueues or releases messages, or *timeout*
        seconds pass (see :mod:`.listen`); where the database cannot notify (SQLite,
        MySQL) or ``notify=False``, wait *timeout* seconds like any store."""
        self._check_open()
        if timeout <= 0:
            return
        if self._listener is None or not self._notify:
            super().wait_for_work(timeout)
            return
        self._listener.wait(timeout)

    def close(self) -> None:
        """Make the store unusable and close its listening connection; the engine stays
        the caller's to dispose."""
        self._closed = True
        if self._pinned is not None:
            self._pinned.close()
        if self._listener is not None:
            self._listener.close()
