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

import contextlib
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Engine, exc
from sqlalchemy.pool import QueuePool, StaticPool

from stepkernel.adapters.decoded import DecodedRecords
from stepkernel.adapters.sql.apply import (
    SlowPath,
    apply_checked,
    apply_fast,
    apply_single,
    name_conflict,
    single_params,
)
from stepkernel.adapters.sql.engine import (
    autocommits_reads,
    pool_lock,
    sqlite_engine,
    switches_autocommit,
)
from stepkernel.adapters.sql.leasing import Row, deliveries, pick, pick_and_grant
from stepkernel.adapters.sql.listen import Listener, can_listen
from stepkernel.adapters.sql.pinned import PinnedConnections
from stepkernel.adapters.sql.races import ATTEMPTS, lost_race, pause, sqlstate
from stepkernel.adapters.sql.rows import CommitPlan
from stepkernel.adapters.sql.schema import create_schema
from stepkernel.adapters.sql.session import DirectSession, Session, core_rows, transaction
from stepkernel.adapters.sql.statements import CHUNK, Statements, actions_query, chunks, group_keys
from stepkernel.domain.encoding import decode_message, decode_record
from stepkernel.domain.errors import ConflictError, CorruptRecordError, StoreUnavailableError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ACTION, ActionRecord, Record, RecordKey
from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.store import ActionQuery, Commit, Delivery, WorkflowStore

__all__ = ["SqlWorkflowStore", "sqlite_engine"]


_T = TypeVar("_T")


class SqlWorkflowStore(WorkflowStore):
    """A :class:`WorkflowStore` in a SQL database reached through a SQLAlchemy engine.

    The engine is the caller's (configured, pooled, not in ``AUTOCOMMIT``); :meth:`close`
    does not dispose it.  With ``create=True`` (default) the tables are created if
    missing and the schema version is checked
    (:func:`~stepkernel.adapters.sql.schema.create_schema`); ``create=False`` touches
    nothing (schemas installed by your own migrations: check them with
    :func:`~stepkernel.adapters.sql.schema.check_schema`).
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
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a sqlalchemy Engine, not {type(engine).__name__}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a stepkernel Clock, not {type(clock).__name__}")
        for name, flag in (("create", create), ("direct", direct), ("notify", notify)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
        # create_engine(isolation_level=...) is kept on the dialect (applied to every new
        # connection), Engine.execution_options(isolation_level=...) in the options.
        levels = (
            getattr(engine.dialect, "_on_connect_isolation_level", None),
            engine.get_execution_options().get("isolation_level"),
        )
        if "AUTOCOMMIT" in levels:
            raise ValueError("the engine must not be in AUTOCOMMIT: commits need transactions")
        self.clock = clock if clock is not None else SystemClock()
        self.commits = 0
        self.retries = 0
        self._count_lock = threading.Lock()
        self._closed = False
        self._engine = engine
        # (kind, key) -> (stored text, record): a load that reads back exactly the text
        # remembered reuses the (immutable) record instead of decoding and verifying it
        # again.  Any other text, e.g. tampered bytes, is decoded and checked as usual.
        self._decoded = DecodedRecords()
        driver_error = getattr(engine.dialect.loaded_dbapi, "Error", None)
        self._errors: tuple[type[BaseException], ...] = (exc.SQLAlchemyError,) + (
            (driver_error,)
            if isinstance(driver_error, type) and issubclass(driver_error, BaseException)
            else ()
        )
        self._sql = Statements(engine.dialect)
        self._direct = direct and self._sql.direct
        self._notify = notify and self._sql.notify is not None
        self._single = self._direct and self._sql.single and switches_autocommit(engine)
        self._listener = Listener(engine) if can_listen(engine) else None
        self._batched_rowcount = bool(engine.dialect.supports_sane_multi_rowcount)
        sqlite = engine.dialect.name == "sqlite"
        # One connection per thread where the driver allows it (see .pinned); not on a
        # one-connection pool (SQLite ":memory:"), which every thread shares.
        ours = autocommits_reads(engine)  # sqlite_engine: driver autocommit, our BEGINs
        pinnable = self._single or (self._direct and ours and isinstance(engine.pool, QueuePool))
        self._pinned = PinnedConnections(engine) if pinnable else None
        lock = pool_lock(engine.pool) if sqlite else None
        shared = sqlite and isinstance(engine.pool, StaticPool)
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            lock if lock is not None else contextlib.nullcontext()
        )
        self._read_lock: contextlib.AbstractContextManager[Any] = (
            lock if shared and lock is not None else contextlib.nullcontext()
        )
        if create:
            create_schema(engine)

    @property
    def engine(self) -> Engine:
        """The engine the store runs on (the caller's; for backdoor tests and tools)."""
        return self._engine

    # -- plumbing -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the store is closed", operation="closed")

    def _unavailable(self, operation: str, error: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"SQL store {operation} failed: {type(error).__name__}: {error}",
            operation=operation,
            sqlstate=sqlstate(error),
        )

    def _retrying(self, operation: str, attempt: Callable[[], _T]) -> _T:
        """Run the transaction *attempt*, again when the database aborts it as a lost
        race (:mod:`.races`); driver errors become :class:`StoreUnavailableError`, and
        a commit that keeps losing raises :class:`ConflictError`."""
        for tries in range(1, ATTEMPTS + 1):
            try:
                return attempt()
            except self._errors as error:
                if not lost_race(error):
                    raise self._unavailable(operation, error) from error
                if tries < ATTEMPTS:
                    with self._count_lock:
                        self.retries += 1
                    pause(tries)
                    continue
                if operation != "commit":
                    raise self._unavailable(operation, error) from error
                raise ConflictError(
                    f"commit lost {ATTEMPTS} races in a row ({sqlstate(error)}): "
                    f"{type(error).__name__}",
                    key=None,
                    expected=None,
                    actual=None,
                    sqlstate=sqlstate(error),
                ) from error
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self) -> contextlib.AbstractContextManager[Session]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); hold the write lock."""
        if self._pinned is not None:
            return self._pinned.transaction(atomic=True)
        return transaction(self._engine, direct=self._direct)

    def _read(self, *, atomic: bool) -> contextlib.AbstractContextManager[Session]:
        """A read transaction, or (``atomic=False``) none, for a lone statement."""
        if self._pinned is not None:
            return self._pinned.transaction(atomic=atomic, read=True)
        return transaction(self._engine, direct=self._direct, read=True, atomic=atomic)

    def _lone(self) -> contextlib.AbstractContextManager[Session]:
        """No transaction: every statement is its own (psycopg: in autocommit)."""
        if self._pinned is not None:
            return self._pinned.transaction(atomic=False)
        return transaction(self._engine, direct=self._direct, atomic=False)

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

    def _count(self) -> None:
        with self._count_lock:
            self.commits += 1

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

        A message that does not decode raises :class:`CorruptRecordError` and leases
        nothing (the transaction is rolled back)."""
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
                # Decoded before granting: a corrupt message leases nothing.
                out = deliveries([(i, data, n + 1) for i, data, n in rows], until)
                if rows:
                    grants = [{"b_id": row[0], "u_owner": worker, "u_until": until} for row in rows]
                    session.run_many(self._sql.grant, grants)
            return out

        return self._retrying("lease", attempt)

    def _lease_one(self, worker: str, limit: int, now: float, until: float) -> list[Delivery]:
        """PostgreSQL: pick and grant in one statement, in autocommit (one round trip).
        A message that does not decode has its grant undone (the whole batch's) before
        :class:`CorruptRecordError` is raised, so it leases nothing, as elsewhere."""
        sql = self._sql.lease_one
        assert sql is not None

        def attempt() -> list[Row]:
            with self._lone() as session:
                assert isinstance(session, DirectSession)
                return pick_and_grant(
                    session, sql, worker=worker, limit=limit, now=now, until=until
                )

        rows = self._retrying("lease", attempt)
        try:
            return deliveries(rows, until)
        except CorruptRecordError:
            undo = [{"b_id": row[0], "b_owner": worker} for row in rows]
            self._write_many("lease", self._sql.ungrant, undo)
            raise

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

    def _write_many(
        self, operation: str, prepared: Any, params: list[dict[str, Any]], *, notify: bool = False
    ) -> None:
        def attempt() -> None:
            with self._write_lock, self._write() as session:
                session.run_many(prepared, params)
                if notify and self._sql.notify is not None:
                    session.run(self._sql.notify, {})

        self._retrying(operation, attempt)

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
        return [decode_message(message_id, data) for message_id, data in rows]

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
        return found

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
