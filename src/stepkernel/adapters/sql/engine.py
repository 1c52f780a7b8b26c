"""SQLite engines for the SQL store, and how the store opens transactions on any engine.

:func:`sqlite_engine` builds an :class:`~sqlalchemy.Engine` on a SQLite file tuned for
workers (WAL, ``BEGIN IMMEDIATE`` for writes).  :func:`begin` opens a transaction on a
pooled DBAPI connection the way SQLAlchemy would (``dialect.do_begin``), with a deferred
``BEGIN`` for reads on those engines.  :func:`pool_lock` gives the in-process lock the
store serialises SQLite writes with.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL
from sqlalchemy.pool import Pool, QueuePool, StaticPool

__all__ = [
    "READ_ONLY",
    "autocommits_reads",
    "begin",
    "pool_lock",
    "sqlite_engine",
    "switches_autocommit",
]

READ_ONLY = "stepkernel_read_only"
"""Connection ``info`` flag the store raises while opening a read transaction;
:func:`sqlite_engine` engines answer it with a deferred ``BEGIN`` (not ``IMMEDIATE``)."""

_DRIVER = "stepkernel"


def sqlite_engine(path: str | os.PathLike[str], *, pool_size: int = 4) -> Engine:
    """An :class:`~sqlalchemy.Engine` on the SQLite file *path*, tuned for workers.

    Every connection runs ``journal_mode=WAL``, ``synchronous=NORMAL``,
    ``busy_timeout=30000`` and ``foreign_keys=OFF``.  Write transactions open with
    ``BEGIN IMMEDIATE`` (pysqlite's own transaction handling is switched off, so a
    statement outside a transaction is its own atomic transaction), and workers in
    several threads or processes queue on the write lock instead of failing with a
    lock-upgrade deadlock; the store's read transactions use a deferred ``BEGIN`` and
    never block writers.  ``":memory:"`` (or ``""``) gives a private in-memory database
    on one shared connection.
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
        read = dbapi_connection.info.get(READ_ONLY)
        dbapi_connection.driver_connection.execute("BEGIN" if read else "BEGIN IMMEDIATE")


registry.register(f"sqlite.{_DRIVER}", __name__, "_SQLiteDialect")


def autocommits_reads(engine: Engine) -> bool:
    """Whether a lone statement outside a transaction is atomic and holds no
    transaction open afterwards (true for :func:`sqlite_engine` engines)."""
    return isinstance(engine.dialect, _SQLiteDialect)


def switches_autocommit(engine: Engine) -> bool:
    """Whether a pooled connection of *engine* can be put in driver autocommit for a lone
    statement at no cost (psycopg 3: an attribute of the idle connection, no round
    trip), which saves the implicit ``BEGIN`` and the reset's ``ROLLBACK``."""
    return engine.dialect.driver == "psycopg"


def begin(engine: Engine, dbapi_connection: Any, *, read: bool) -> None:
    """Open a transaction on a pooled DBAPI connection of *engine*, as SQLAlchemy's
    ``Connection.begin`` would (``dialect.do_begin``; a no-op for PEP 249 drivers, which
    begin implicitly); *read* asks :func:`sqlite_engine` engines for a deferred
    ``BEGIN``."""
    if not read:
        engine.dialect.do_begin(dbapi_connection)
        return
    info = dbapi_connection.info
    info[READ_ONLY] = True
    try:
        engine.dialect.do_begin(dbapi_connection)
    finally:
        del info[READ_ONLY]


_LOCKS: weakref.WeakKeyDictionary[Pool, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def pool_lock(pool: Pool) -> threading.Lock:
    """The one in-process lock shared by every store on *pool*."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(pool)
        if lock is None:
            lock = _LOCKS[pool] = threading.Lock()
        return lock
