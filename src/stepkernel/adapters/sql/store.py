"""The SQL store: records and the leased queue in one database, via SQLAlchemy Core.

Records are stored as the domain's :func:`~stepkernel.domain.encoding.encode_record`
text and rebuilt with :func:`~stepkernel.domain.encoding.decode_record`; messages as
JSON of their fields.  Every statement is built once per store and executed with
parameters (lists for ``executemany``), so a transition costs a handful of cached
statement executions.  See :mod:`stepkernel.adapters.sql.schema` for the tables.

Dialects: SQLite (default, see :func:`sqlite_engine`), PostgreSQL and MySQL/MariaDB use
their native insert-if-absent (``ON CONFLICT DO NOTHING`` / ``INSERT IGNORE``); any other
dialect falls back to portable statements.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Engine,
    Executable,
    Integer,
    bindparam,
    create_engine,
    event,
    exc,
    func,
    select,
)
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import Pool, QueuePool, StaticPool

from stepkernel.adapters.sql.schema import create_schema, messages, records
from stepkernel.domain.encoding import decode_record, encode_record
from stepkernel.domain.errors import ConflictError, CorruptRecordError, StoreUnavailableError
from stepkernel.domain.messages import Message, MessageKind
from stepkernel.domain.records import ACTION, ActionRecord, Record, RecordKey, key_of
from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.store import ActionQuery, Commit, Delivery, WorkflowStore

_READ_ONLY = "stepkernel_read_only"
"""Connection ``info`` flag the store raises while opening a read transaction;
:func:`sqlite_engine` engines answer it with a deferred ``BEGIN`` (not ``IMMEDIATE``)."""

_CHUNK = 500
"""Most values bound into one ``IN (...)`` list (well under every driver's limit)."""

_SLOW_PATH_ATTEMPTS = 3

_DECODED_CACHE = 4096
"""Records remembered per store with the exact text they were stored as (see load)."""

_message_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


# -- engines -------------------------------------------------------------------------------


def sqlite_engine(path: str | os.PathLike[str], *, pool_size: int = 4) -> Engine:
    """An :class:`~sqlalchemy.Engine` on the SQLite file *path*, tuned for workers.

    Every connection runs ``journal_mode=WAL``, ``synchronous=NORMAL``,
    ``busy_timeout=30000`` and ``foreign_keys=OFF``.  Write transactions open with
    ``BEGIN IMMEDIATE`` (pysqlite's own transaction handling is switched off), so workers
    in several threads or processes queue on the write lock instead of failing with a
    lock-upgrade deadlock; the store's read transactions use a deferred ``BEGIN`` and
    never block writers.  ``":memory:"`` (or ``""``) gives a private in-memory database on
    one shared connection.
    """
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"pool_size must be a positive int, not {pool_size!r}")
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"path must be str or PathLike[str], not {type(name).__name__}")
    connect_args = {"check_same_thread": False}
    if name in ("", ":memory:"):
        engine = create_engine(
            f"sqlite+{_DRIVER}://", poolclass=StaticPool, connect_args=connect_args
        )
    else:
        engine = create_engine(
            URL.create(f"sqlite+{_DRIVER}", database=name),
            poolclass=QueuePool,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args=connect_args,
        )
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # BEGIN is ours (see _SQLiteDialect)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=OFF")
    finally:
        cursor.close()


class _SQLiteDialect(SQLiteDialect_pysqlite):
    """pysqlite that opens transactions itself: ``BEGIN IMMEDIATE`` for writes, a
    deferred ``BEGIN`` for the store's reads.

    This is SQLAlchemy's documented recipe for SQLite transactions (driver autocommit
    plus an explicit ``BEGIN``), done in ``do_begin`` rather than in a ``begin`` engine
    event: any engine event makes SQLAlchemy dispatch events around every statement,
    which costs more than the statement itself.  Errors are wrapped by SQLAlchemy.
    """

    supports_statement_cache = True

    def do_begin(self, dbapi_connection: Any) -> None:
        read = dbapi_connection.info.get(_READ_ONLY)
        dbapi_connection.driver_connection.execute("BEGIN" if read else "BEGIN IMMEDIATE")


_DRIVER = "stepkernel"
registry.register(f"sqlite.{_DRIVER}", __name__, "_SQLiteDialect")


_LOCKS: weakref.WeakKeyDictionary[Pool, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _pool_lock(pool: Pool) -> threading.Lock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(pool)
        if lock is None:
            lock = _LOCKS[pool] = threading.Lock()
        return lock


# -- the store -----------------------------------------------------------------------------


class _SlowPath(Exception):
    """Internal: the optimistic statements disagreed; redo the commit checking first."""


class SqlWorkflowStore(WorkflowStore):
    """A :class:`WorkflowStore` in a SQL database reached through a SQLAlchemy engine.

    The engine is the caller's (configured, pooled); :meth:`close` does not dispose it.
    With ``create=True`` (default) the tables are created if missing and the schema
    version is checked (:func:`~stepkernel.adapters.sql.schema.create_schema`).

    Round trips per transition (:meth:`commit`), each in one transaction:
    ``BEGIN``; one ``SELECT`` per record kind named in ``guards`` (only when there are
    guards); one ``executemany`` each for deletes, version-checked updates (``v > 1``),
    inserts (``v == 1``), acknowledgements and enqueued messages (only those present);
    ``COMMIT``.  A typical step (write one record, ack one message, enqueue one) is
    ``BEGIN`` + 3 statements + ``COMMIT``.  Only when a version check fails is the
    transaction rolled back and redone with one locking ``SELECT`` of every version
    first, to name the conflicting key (or apply the commit if the race resolved).
    :meth:`lease` is ``BEGIN`` + one indexed range ``SELECT`` on ``due`` + one
    ``executemany`` ``UPDATE`` + ``COMMIT`` per batch; :meth:`load` one ``SELECT`` per
    record kind (per 500 keys).

    On SQLite the store serialises its own write transactions per connection pool with an
    in-process lock (threads then never wait in SQLite's sleeping busy handler), and every
    transaction when the pool is one shared connection (``:memory:``).  Driver errors
    become :class:`StoreUnavailableError`; nothing from SQLAlchemy or the driver escapes.
    ``commits`` counts successful :meth:`commit` calls.
    """

    def __init__(self, engine: Engine, *, clock: Clock | None = None, create: bool = True) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a sqlalchemy Engine, not {type(engine).__name__}")
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a stepkernel Clock, not {type(clock).__name__}")
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, not {type(create).__name__}")
        self.clock = clock if clock is not None else SystemClock()
        self.commits = 0
        self._count_lock = threading.Lock()
        self._closed = False
        self._engine = engine
        # (kind, key) -> (stored text, record): a load that reads back exactly the text
        # remembered reuses the (immutable) record instead of decoding and verifying it
        # again.  Any other text, e.g. tampered bytes, is decoded and checked as usual.
        self._decoded: dict[RecordKey, tuple[str, Record]] = {}
        dbapi = engine.dialect.loaded_dbapi
        driver_error = getattr(dbapi, "Error", None)
        self._errors: tuple[type[BaseException], ...] = (exc.SQLAlchemyError,) + (
            (driver_error,)
            if isinstance(driver_error, type) and issubclass(driver_error, BaseException)
            else ()
        )
        dialect = engine.dialect.name
        self._batched_rowcount = bool(engine.dialect.supports_sane_multi_rowcount)
        sqlite = dialect == "sqlite"
        shared = sqlite and isinstance(engine.pool, StaticPool)
        lock = _pool_lock(engine.pool) if sqlite else None
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            lock if lock is not None else contextlib.nullcontext()
        )
        self._read_lock: contextlib.AbstractContextManager[Any] = (
            lock if shared and lock is not None else contextlib.nullcontext()
        )
        self._build_statements(dialect)
        if create:
            create_schema(engine)

    @property
    def engine(self) -> Engine:
        """The engine the store runs on (the caller's; for backdoor tests and tools)."""
        return self._engine

    # -- statements ---------------------------------------------------------------------

    def _build_statements(self, dialect: str) -> None:
        r, m = records, messages
        self._load_stmt = select(r.c.key, r.c.data).where(
            r.c.kind == bindparam("kind"), r.c.key.in_(bindparam("keys", expanding=True))
        )
        self._load_one_stmt = select(r.c.data).where(
            r.c.kind == bindparam("kind"), r.c.key == bindparam("key")
        )
        versions = select(r.c.key, r.c.version).where(
            r.c.kind == bindparam("kind"), r.c.key.in_(bindparam("keys", expanding=True))
        )
        # Guards lock exclusively (FOR UPDATE, not FOR SHARE): a guarded record is often
        # written in the same transaction, and share-then-upgrade deadlocks under load.
        self._lock_versions_stmt = versions.with_for_update()
        # The identity columns of an action never change after it is created, so the
        # update leaves their index entries alone and only *checks* them: a write that
        # did change one matches no row and takes the slow path, which rewrites the row.
        self._update_stmt = (
            r.update()
            .where(
                r.c.kind == bindparam("b_kind"),
                r.c.key == bindparam("b_key"),
                r.c.version == bindparam("b_prev"),
                r.c.root_id.is_not_distinct_from(bindparam("b_root_id")),
                r.c.actor_type.is_not_distinct_from(bindparam("b_actor_type")),
                r.c.actor_key.is_not_distinct_from(bindparam("b_actor_key")),
                r.c.name.is_not_distinct_from(bindparam("b_name")),
                r.c.created_at.is_not_distinct_from(bindparam("b_created_at")),
            )
            .values(
                version=bindparam("u_version"),
                data=bindparam("u_data"),
                status=bindparam("u_status"),
            )
        )
        self._delete_stmt = r.delete().where(
            r.c.kind == bindparam("b_kind"),
            r.c.key == bindparam("b_key"),
            r.c.version == bindparam("b_prev"),
        )
        self._delete_any_stmt = r.delete().where(
            r.c.kind == bindparam("b_kind"), r.c.key == bindparam("b_key")
        )
        self._insert_plain_stmt = r.insert()
        self._insert_record_stmt, native = _insert_if_absent(dialect, r, ("kind", "key"))
        self._native_upsert = native
        self._insert_message_stmt, _ = _insert_if_absent(dialect, m, ("id",))
        self._existing_ids_stmt = select(m.c.id).where(m.c.id.in_(bindparam("ids", expanding=True)))
        self._ack_stmt = m.delete().where(m.c.id == bindparam("b_id"))
        self._due_stmt = (
            select(m.c.id, m.c.data, m.c.deliveries)
            .where(m.c.due <= bindparam("now"))
            .order_by(m.c.due, m.c.id)
            .limit(bindparam("lim", type_=Integer))
            .with_for_update(skip_locked=True)
        )
        self._by_ids_stmt = (
            select(m.c.id, m.c.data, m.c.deliveries, m.c.available_at, m.c.owner, m.c.lease_until)
            .where(m.c.id.in_(bindparam("ids", expanding=True)))
            .with_for_update(skip_locked=True)
        )
        self._grant_stmt = (
            m.update()
            .where(m.c.id == bindparam("b_id"))
            .values(
                owner=bindparam("u_owner"),
                lease_until=bindparam("u_until"),
                due=bindparam("u_until"),
                deliveries=m.c.deliveries + 1,
            )
        )
        self._release_stmt = (
            m.update()
            .where(m.c.id == bindparam("b_id"), m.c.owner == bindparam("b_owner"))
            .values(owner=None, lease_until=0.0, due=m.c.available_at)
        )
        self._extend_stmt = (
            m.update()
            .where(m.c.id == bindparam("b_id"), m.c.owner == bindparam("b_owner"))
            .values(lease_until=bindparam("u_until"), due=bindparam("u_until"))
        )
        self._next_due_stmt = select(func.min(m.c.due))
        self._queued_stmt = select(m.c.id, m.c.data).order_by(m.c.available_at, m.c.id)
        self._queued_action_stmt = self._queued_stmt.where(m.c.action_id == bindparam("action"))

    # -- plumbing -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the store is closed", operation="closed")

    def _unavailable(self, operation: str, error: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"SQL store {operation} failed: {type(error).__name__}: {error}",
            operation=operation,
        )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection in a read transaction (a deferred ``BEGIN`` on SQLite)."""
        with self._read_lock, self._engine.connect() as conn:
            info = conn.info
            info[_READ_ONLY] = True
            try:
                transaction = conn.begin()
            finally:
                del info[_READ_ONLY]
            with transaction:
                yield conn

    # -- records -------------------------------------------------------------------------

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        """Every key's record or ``None``; one ``SELECT`` per kind (and 500 keys)."""
        self._check_open()
        found: dict[RecordKey, Record | None] = dict.fromkeys(keys)
        if not found:
            return found
        by_kind: dict[str, list[str]] = {}
        for kind, key in found:
            by_kind.setdefault(kind, []).append(key)
        rows: list[tuple[str, str, str]] = []
        try:
            with self._reading() as conn:
                for kind, names in by_kind.items():
                    if len(names) == 1:  # the common case: no expanding IN to render
                        (key,) = names
                        one = conn.execute(self._load_one_stmt, {"kind": kind, "key": key})
                        rows.extend((kind, key, text) for (text,) in one)
                        continue
                    for chunk in _chunks(names):
                        result = conn.execute(self._load_stmt, {"kind": kind, "keys": chunk})
                        rows.extend((kind, key, data) for key, data in result)
        except self._errors as error:
            raise self._unavailable("load", error) from error
        decoded = self._decoded
        for kind, key, data in rows:
            record_key = (kind, key)
            hit = decoded.get(record_key)
            if hit is not None and hit[0] == data:
                found[record_key] = hit[1]
                continue
            record = decode_record(record_key, data)
            self._remember(record_key, data, record)
            found[record_key] = record
        return found

    def _remember(self, key: RecordKey, text: str, record: Record) -> None:
        """Cache *record* as the decoding of *text* at *key* (bounded, oldest out)."""
        decoded = self._decoded
        decoded.pop(key, None)
        decoded[key] = (text, record)
        if len(decoded) > _DECODED_CACHE:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del decoded[next(iter(decoded))]

    def commit(self, commit: Commit) -> None:
        """Apply *commit* atomically or raise :class:`ConflictError` changing nothing."""
        self._check_open()
        if commit.empty and not commit.guards:
            self._count()
            return
        plan = _Plan(commit)
        try:
            with self._write_lock, self._engine.connect() as conn:
                try:
                    if not plan.distinct:
                        raise _SlowPath
                    with conn.begin():
                        self._apply_fast(conn, plan)
                except _SlowPath:
                    self._apply_checked(conn, plan)
        except self._errors as error:
            raise self._unavailable("commit", error) from error
        for row, record in zip(plan.final_rows, plan.final_records, strict=True):
            self._remember((row["kind"], row["key"]), row["data"], record)
        self._count()

    def _count(self) -> None:
        with self._count_lock:
            self.commits += 1

    def _apply_fast(self, conn: Connection, plan: _Plan) -> None:
        """The optimistic path: version-checked statements, counting affected rows."""
        if plan.guards:
            self._check_guards(conn, plan)
        batched = self._batched_rowcount
        deletes, updates = plan.deletes, plan.updates
        if deletes and _rowcount(conn, self._delete_stmt, deletes, batched=batched) != len(deletes):
            raise _SlowPath
        if updates and _rowcount(conn, self._update_stmt, updates, batched=batched) != len(updates):
            raise _SlowPath
        if plan.inserts:
            if self._native_upsert:
                inserted = _rowcount(conn, self._insert_record_stmt, plan.inserts, batched=batched)
                if inserted != len(plan.inserts):
                    raise _SlowPath
            else:
                try:
                    conn.execute(self._insert_plain_stmt, plan.inserts)
                except exc.IntegrityError:
                    raise _SlowPath from None  # the transaction is rolled back
        self._apply_queue(conn, plan)

    def _check_guards(self, conn: Connection, plan: _Plan) -> None:
        stored = self._versions(conn, self._lock_versions_stmt, plan.guard_keys)
        for key, expected in plan.guards.items():
            _check(key, expected, stored.get((key[0], key[1]), 0))

    def _versions(
        self, conn: Connection, stmt: Executable, keys: Iterable[RecordKey]
    ) -> dict[RecordKey, int]:
        by_kind: dict[str, list[str]] = {}
        for kind, key in keys:
            by_kind.setdefault(kind, []).append(key)
        stored: dict[RecordKey, int] = {}
        for kind, names in by_kind.items():
            for chunk in _chunks(sorted(set(names))):
                for key, version in conn.execute(stmt, {"kind": kind, "keys": chunk}):
                    stored[(kind, key)] = version
        return stored

    def _apply_checked(self, conn: Connection, plan: _Plan) -> None:
        """The precise path: lock and read every version, check them in the reference
        adapter's order (guards, deletes, writes) and apply with unconditional
        statements."""
        for _attempt in range(_SLOW_PATH_ATTEMPTS):
            try:
                with conn.begin():
                    stored = self._versions(conn, self._lock_versions_stmt, plan.all_keys)
                    for key, expected in plan.guards.items():
                        _check(key, expected, stored.get((key[0], key[1]), 0))
                    for key, expected in plan.delete_checks:
                        _check(key, expected, stored.get(key, 0))
                    for key, expected in plan.write_checks:
                        _check(key, expected, stored.get(key, 0))
                    if plan.clears:
                        conn.execute(self._delete_any_stmt, plan.clears)
                    if plan.final_rows:
                        conn.execute(self._insert_plain_stmt, plan.final_rows)
                    self._apply_queue(conn, plan)
                    return
            except exc.IntegrityError:
                continue  # a concurrent insert of a key read as absent: read again
        raise StoreUnavailableError("commit kept racing concurrent inserts", operation="commit")

    def _apply_queue(self, conn: Connection, plan: _Plan) -> None:
        if plan.acks:
            conn.execute(self._ack_stmt, plan.acks)
        if not plan.enqueue:
            return
        if self._native_upsert:
            conn.execute(self._insert_message_stmt, plan.enqueue)
            return
        wanted = list(dict.fromkeys(row["id"] for row in plan.enqueue))
        present: set[str] = set()
        for chunk in _chunks(wanted):
            present.update(conn.execute(self._existing_ids_stmt, {"ids": chunk}).scalars())
        fresh: dict[str, dict[str, Any]] = {}
        for row in plan.enqueue:
            if row["id"] not in present and row["id"] not in fresh:
                fresh[row["id"]] = row
        if fresh:
            conn.execute(self._insert_message_stmt, list(fresh.values()))

    # -- queue ---------------------------------------------------------------------------

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to *limit* due messages, earliest ``due`` first (or in *ids* order)."""
        self._check_open()
        if limit <= 0:
            return []
        now = float(self.clock.now())
        until = now + lease_seconds
        try:
            with self._write_lock, self._engine.connect() as conn, conn.begin():
                if ids is None:
                    rows = [
                        (message_id, data, deliveries)
                        for message_id, data, deliveries in conn.execute(
                            self._due_stmt, {"now": now, "lim": limit}
                        )
                    ]
                else:
                    rows = self._leasable_by_ids(conn, list(dict.fromkeys(ids)), now, limit)
                # Decoded before granting: a corrupt message leases nothing.
                out = [
                    Delivery(
                        message=_message_from_text(message_id, data),
                        deliveries=deliveries + 1,
                        lease_until=until,
                    )
                    for message_id, data, deliveries in rows
                ]
                if rows:
                    conn.execute(
                        self._grant_stmt,
                        [{"b_id": row[0], "u_owner": worker, "u_until": until} for row in rows],
                    )
        except self._errors as error:
            raise self._unavailable("lease", error) from error
        return out

    def _leasable_by_ids(
        self, conn: Connection, wanted: list[str], now: float, limit: int
    ) -> list[tuple[str, str, int]]:
        found: dict[str, tuple[str, str, int]] = {}
        for chunk in _chunks(wanted):
            for message_id, data, deliveries, available_at, owner, lease_until in conn.execute(
                self._by_ids_stmt, {"ids": chunk}
            ):
                if available_at > now or (owner is not None and lease_until > now):
                    continue
                found[message_id] = (message_id, data, deliveries)
        return [found[i] for i in wanted if i in found][:limit]

    def ack(self, ids: Iterable[str]) -> None:
        """Delete the messages *ids*; unknown ids are ignored."""
        self._check_open()
        params = [{"b_id": message_id} for message_id in dict.fromkeys(ids)]
        if not params:
            return
        try:
            with self._write_lock, self._engine.connect() as conn, conn.begin():
                conn.execute(self._ack_stmt, params)
        except self._errors as error:
            raise self._unavailable("ack", error) from error

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        """Clear *worker*'s leases on *ids*: ``due`` falls back to ``available_at``."""
        self._check_open()
        params = [{"b_id": i, "b_owner": worker} for i in dict.fromkeys(ids)]
        if not params:
            return
        try:
            with self._write_lock, self._engine.connect() as conn, conn.begin():
                conn.execute(self._release_stmt, params)
        except self._errors as error:
            raise self._unavailable("release", error) from error

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        """Move *worker*'s leases on *ids* to ``now + lease_seconds``."""
        self._check_open()
        until = float(self.clock.now()) + lease_seconds
        params = [{"b_id": i, "b_owner": worker, "u_until": until} for i in dict.fromkeys(ids)]
        if not params:
            return
        try:
            with self._write_lock, self._engine.connect() as conn, conn.begin():
                conn.execute(self._extend_stmt, params)
        except self._errors as error:
            raise self._unavailable("extend", error) from error

    def next_due(self) -> float | None:
        """``MIN(due)`` over the queue, ``None`` when it is empty."""
        self._check_open()
        try:
            with self._reading() as conn:
                value = conn.execute(self._next_due_stmt).scalar()
        except self._errors as error:
            raise self._unavailable("next_due", error) from error
        return None if value is None else float(value)

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        """Queued messages (leased or not), ordered by ``available_at`` then id."""
        self._check_open()
        try:
            with self._reading() as conn:
                if action_id is None:
                    rows = conn.execute(self._queued_stmt).all()
                else:
                    rows = conn.execute(self._queued_action_stmt, {"action": action_id}).all()
        except self._errors as error:
            raise self._unavailable("queued", error) from error
        return [_message_from_text(message_id, data) for message_id, data in rows]

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        """Actions matching *query* via the indexed columns, by ``created_at`` then id."""
        self._check_open()
        r = records
        stmt = select(r.c.key, r.c.data).where(r.c.kind == ACTION)
        if query.root_id is not None:
            stmt = stmt.where(r.c.root_id == query.root_id)
        if query.statuses is not None:
            stmt = stmt.where(r.c.status.in_(sorted(s.value for s in query.statuses)))
        if query.actor_type is not None:
            stmt = stmt.where(r.c.actor_type == query.actor_type)
        if query.actor_key is not None:
            stmt = stmt.where(r.c.actor_key == query.actor_key)
        if query.name is not None:
            stmt = stmt.where(r.c.name == query.name)
        stmt = stmt.order_by(r.c.created_at, r.c.key)
        if query.limit is not None:
            stmt = stmt.limit(max(query.limit, 0))
        try:
            with self._reading() as conn:
                rows = conn.execute(stmt).all()
        except self._errors as error:
            raise self._unavailable("find_actions", error) from error
        found: list[ActionRecord] = []
        for key, data in rows:
            record = decode_record((ACTION, key), data)
            if isinstance(record, ActionRecord):
                found.append(record)
        return found

    def close(self) -> None:
        """Make the store unusable; the engine stays the caller's to dispose."""
        self._closed = True


# -- helpers -------------------------------------------------------------------------------


class _Plan:
    """A commit turned into statement parameters (computed once, outside the database)."""

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
            row = _record_row(key, record)
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
        self.enqueue = [_message_row(message) for message in commit.enqueue]


def _record_row(key: RecordKey, record: Record) -> dict[str, Any]:
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


def _message_row(message: Message) -> dict[str, Any]:
    at = float(message.available_at)
    return {
        "id": message.id,
        "kind": message.kind.value,
        "action_id": message.action_id,
        "data": _message_encoder.encode(
            {
                "id": message.id,
                "kind": message.kind.value,
                "action": message.action_id,
                "step": message.step,
                "attempt": message.attempt,
                "dep": message.dep,
                "ok": message.ok,
                "status": message.status,
                "at": message.available_at,
            }
        ),
        "available_at": at,
        "owner": None,
        "lease_until": 0.0,
        "deliveries": 0,
        "due": at,
    }


def _message_from_text(message_id: str, text: str) -> Message:
    """Rebuild a queued message; undecodable text raises :class:`CorruptRecordError`
    with key ``("message", id)``."""
    try:
        data = json.loads(text)
        message = Message(
            id=data["id"],
            kind=MessageKind(data["kind"]),
            action_id=data["action"],
            step=data["step"],
            attempt=data["attempt"],
            dep=data["dep"],
            ok=data["ok"],
            status=data["status"],
            available_at=data["at"],
        )
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptRecordError(
            f"message {message_id} does not decode: {error}",
            key=("message", message_id),
            reason=str(error),
        ) from None
    if message.id != message_id:
        raise CorruptRecordError(
            f"message stored as {message_id} names {message.id}",
            key=("message", message_id),
            reason="id mismatch",
        )
    return message


def _check(key: RecordKey, expected: int, actual: int) -> None:
    if actual != expected:
        raise ConflictError(
            f"{key[0]}:{key[1]} is at version {actual}, expected {expected}",
            key=(key[0], key[1]),
            expected=expected,
            actual=actual,
        )


def _rowcount(
    conn: Connection, stmt: Executable, params: list[dict[str, Any]], *, batched: bool
) -> int:
    """Rows affected by *stmt* over *params*: one ``executemany`` when the driver counts
    them reliably (*batched*), else one execution per row."""
    if batched or len(params) == 1:
        result: Any = conn.execute(stmt, params)
        return int(result.rowcount)
    total = 0
    for row in params:
        result = conn.execute(stmt, row)
        total += int(result.rowcount)
    return total


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _insert_if_absent(
    dialect: str, table: Any, index_elements: tuple[str, ...]
) -> tuple[Executable, bool]:
    """An insert that skips rows whose primary key exists, and whether it is native
    (affected-row counts then tell inserted from skipped rows)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=index_elements), True
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=index_elements), True
    if dialect in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE"), True
    return table.insert(), False
