"""One pooled connection pinned to each thread, kept in driver autocommit (psycopg 3,
and SQLite through :func:`~stepkernel.adapters.sql.engine.sqlite_engine`).

A worker thread runs a load, a commit and a lease per step.  Checking a connection out
of the pool for each (checkout, a fresh cursor, switching autocommit on and off, the
pool's reset on return) costs a worker about as much CPU as the statements themselves.
:class:`PinnedConnections` instead gives every thread its own connection for as long as
the thread lives (it goes back to the pool when the thread ends or the store closes),
left in autocommit: a lone statement is its own transaction, and a transaction is an
explicit ``BEGIN`` ... ``COMMIT`` on the same connection (``ROLLBACK`` if the block
raises).

A connection the driver reports gone (server restart, terminated backend) is invalidated
by :meth:`DirectSession.wrap` and dropped here: the call fails, and the thread's next call
pins a fresh connection.  So is one whose ``ROLLBACK`` fails.  psycopg connections go
back to the pool with autocommit off, as every other user of the pool expects them.
SQLite connections of :func:`~stepkernel.adapters.sql.engine.sqlite_engine` are in
driver autocommit anyway; their transactions open through the dialect (``BEGIN
IMMEDIATE`` for writes, a deferred ``BEGIN`` for reads), which on SQLite takes the
write lock only when it is needed.

At most ``limit`` threads hold a pin at once (by default the pool's size, so pins never
take its overflow: the heartbeat and the recovery sweep always find a connection); any
further thread -- say one of an application's many request threads -- checks a
connection out per call, as without pinning.  A psycopg transaction opens with the
isolation level the engine gives its connections (``READ COMMITTED`` from
:func:`~stepkernel.adapters.sql.server.server_engine`), as the pooled path would.  After
:meth:`PinnedConnections.close`, idle pins go back to the pool at once and pins in use
when their call ends; calls still running then check out per call.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine, exc

from stepkernel.adapters.sql.engine import begin, switches_autocommit
from stepkernel.adapters.sql.session import DirectSession, transaction

__all__ = ["PinnedConnections"]


class _Pin:
    """One thread's connection and its session (cursor).  ``busy`` while a call runs on
    it; ``doomed`` when the store closed meanwhile (released when the call ends)."""

    __slots__ = (
        "__weakref__",
        "begin_sql",
        "busy",
        "doomed",
        "on_release",
        "raw",
        "session",
        "switched",
    )

    def __init__(
        self,
        raw: Any,
        session: DirectSession,
        *,
        switched: bool,
        on_release: Callable[[], None],
    ) -> None:
        self.raw: Any = raw
        self.session = session
        self.switched = switched  # put in driver autocommit by us (psycopg)
        self.on_release = on_release
        self.busy = False
        self.doomed = False
        self.begin_sql = "BEGIN"  # how a transaction opens on it (psycopg: by hand)

    @property
    def usable(self) -> bool:
        raw = self.raw
        return (
            raw is not None and raw.is_valid and not getattr(raw.driver_connection, "closed", False)
        )

    def release(self) -> None:
        """Give the connection back to the pool (autocommit off again if we switched
        it on), or drop it if broken; free its slot."""
        raw, self.raw = self.raw, None
        if raw is None:
            return
        self.session.close()
        try:
            if raw.is_valid and self.switched:
                raw.driver_connection.autocommit = False
        except Exception:
            with contextlib.suppress(Exception):
                raw.invalidate()
        with contextlib.suppress(Exception):
            raw.close()
        self.on_release()

    def __del__(self) -> None:  # the thread ended: its thread-local storage is gone
        with contextlib.suppress(Exception):
            self.release()


_LEVELS = {
    "READ_UNCOMMITTED": "READ UNCOMMITTED",
    "READ_COMMITTED": "READ COMMITTED",
    "REPEATABLE_READ": "REPEATABLE READ",
    "SERIALIZABLE": "SERIALIZABLE",
}


def _begin_sql(driver: Any) -> str:
    """``BEGIN`` at the isolation level the engine set on this psycopg connection (it
    applies it to the transactions psycopg opens itself; ours are opened by hand)."""
    level = getattr(getattr(driver, "isolation_level", None), "name", None)
    return f"BEGIN ISOLATION LEVEL {_LEVELS[level]}" if level in _LEVELS else "BEGIN"


class PinnedConnections:
    """Per-thread connections of *engine* (see module)."""

    def __init__(self, engine: Engine, *, limit: int | None = None) -> None:
        self._engine = engine
        # psycopg: switch connections to autocommit and BEGIN/COMMIT by hand; SQLite
        # (our dialect): already autocommit, transactions through dialect.do_begin.
        self._switch = switches_autocommit(engine)
        size = getattr(engine.pool, "size", None)
        self.limit = limit if limit is not None else (size() if callable(size) else 8)
        self._local = threading.local()
        self._pins: weakref.WeakSet[_Pin] = weakref.WeakSet()
        self._held = 0  # pins held or being made (a slot is taken before connecting)
        # Reentrant: a pin's __del__ (which frees its slot) may run inside a garbage
        # collection triggered while this very thread holds the lock.
        self._lock = threading.RLock()
        self._closed = False
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error

    def _free_slot(self) -> None:
        with self._lock:
            self._held -= 1

    def _pin(self) -> _Pin | None:
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is not None and pin.usable and not pin.doomed:
            return pin
        if pin is not None:
            pin.release()
            self._local.pin = None
        with self._lock:
            if self._closed or self._held >= self.limit:
                return None  # closed, or enough threads hold pins: check out per call
            self._held += 1  # taken now, so threads starting together cannot overshoot
        try:
            return self._connect()
        except BaseException:
            self._free_slot()
            raise

    def _connect(self) -> _Pin:
        try:
            raw = self._engine.raw_connection()
        except self._dbapi_error as error:
            raise exc.DBAPIError.instance(
                None,
                None,
                error,
                self._dbapi_error,
                hide_parameters=True,
                dialect=self._engine.dialect,
            ) from error
        session = DirectSession(self._engine, raw)
        begin_sql = "BEGIN"
        if self._switch:
            driver: Any = raw.driver_connection
            try:
                driver.autocommit = True
                begin_sql = _begin_sql(driver)
            except self._dbapi_error as error:
                failure = session.wrap(error, "SET autocommit", None)
                session.close()
                raw.close()
                raise failure from error
        pin = _Pin(raw, session, switched=self._switch, on_release=self._free_slot)
        pin.begin_sql = begin_sql
        self._local.pin = pin
        with self._lock:
            self._pins.add(pin)
        return pin

    @contextlib.contextmanager
    def transaction(self, *, atomic: bool, read: bool = False) -> Iterator[DirectSession]:
        """This thread's session: in ``BEGIN`` ... ``COMMIT`` when *atomic* (*read*: a
        read transaction, see :func:`~stepkernel.adapters.sql.engine.begin`), else each
        statement on its own.  Rolled back (atomic) if the block raises."""
        pin = self._pin()
        if pin is not None:
            pin.busy = True
            if self._closed:  # closed between _pin() and now: close() may release it
                pin.busy = False
                pin = None
        if pin is None:
            with transaction(self._engine, direct=True, read=read, atomic=atomic) as fallback:
                assert isinstance(fallback, DirectSession)
                yield fallback
            return
        session = pin.session
        engine = self._engine
        try:
            if atomic:
                if self._switch:
                    session.execute(pin.begin_sql, ())
                else:
                    try:
                        begin(engine, pin.raw, read=read)
                    except self._dbapi_error as error:
                        raise session.wrap(error, "BEGIN", None) from error
            yield session
            if atomic:
                if self._switch:
                    session.execute("COMMIT", ())
                else:
                    try:
                        engine.dialect.do_commit(pin.raw)
                    except self._dbapi_error as error:
                        raise session.wrap(error, "COMMIT", None) from error
        except BaseException:
            if atomic and pin.usable:
                try:
                    if self._switch:
                        session.execute("ROLLBACK", ())
                    else:
                        engine.dialect.do_rollback(pin.raw)
                except Exception:
                    pin.release()
            if not pin.usable:
                pin.release()
                self._local.pin = None
            raise
        finally:
            pin.busy = False
            if pin.doomed:
                pin.release()
                self._local.pin = None

    def close(self) -> None:
        """The store is closing: give idle pins back to the pool now, pins in use when
        their call ends; from now on every call checks out per call."""
        with self._lock:
            self._closed = True
            pins = list(self._pins)
        for pin in pins:
            if pin.busy:
                pin.doomed = True
            else:
                pin.release()
