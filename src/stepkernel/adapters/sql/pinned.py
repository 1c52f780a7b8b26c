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
take its overflow); any further thread -- say one of an application's many request
threads -- checks a connection out per call, as without pinning.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, exc

from stepkernel.adapters.sql.engine import begin, switches_autocommit
from stepkernel.adapters.sql.session import DirectSession, transaction

__all__ = ["PinnedConnections"]


class _Pin:
    """One thread's connection and its session (cursor)."""

    __slots__ = ("__weakref__", "raw", "session", "switched")

    def __init__(self, raw: Any, session: DirectSession, *, switched: bool) -> None:
        self.raw: Any = raw
        self.session = session
        self.switched = switched  # put in driver autocommit by us (psycopg)

    @property
    def usable(self) -> bool:
        raw = self.raw
        return (
            raw is not None and raw.is_valid and not getattr(raw.driver_connection, "closed", False)
        )

    def release(self) -> None:
        """Give the connection back to the pool (autocommit off again if we switched
        it on), or drop it if broken."""
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

    def __del__(self) -> None:  # the thread ended: its thread-local storage is gone
        with contextlib.suppress(Exception):
            self.release()


class PinnedConnections:
    """Per-thread connections of *engine* (psycopg 3; see module)."""

    def __init__(self, engine: Engine, *, limit: int | None = None) -> None:
        self._engine = engine
        # psycopg: switch connections to autocommit and BEGIN/COMMIT by hand; SQLite
        # (our dialect): already autocommit, transactions through dialect.do_begin.
        self._switch = switches_autocommit(engine)
        size = getattr(engine.pool, "size", None)
        self.limit = limit if limit is not None else (size() if callable(size) else 8)
        self._local = threading.local()
        self._pins: weakref.WeakSet[_Pin] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error

    def _pin(self) -> _Pin | None:
        pin: _Pin | None = getattr(self._local, "pin", None)
        if pin is not None and pin.usable:
            return pin
        if pin is not None:
            pin.release()
            self._local.pin = None
        with self._lock:
            if sum(1 for held in self._pins if held.raw is not None) >= self.limit:
                return None  # enough threads hold pins: this one checks out per call
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
        if self._switch:
            driver: Any = raw.driver_connection
            try:
                driver.autocommit = True
            except self._dbapi_error as error:
                failure = session.wrap(error, "SET autocommit", None)
                session.close()
                raw.close()
                raise failure from error
        pin = _Pin(raw, session, switched=self._switch)
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
                    session.execute("BEGIN", ())
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

    def close(self) -> None:
        """Give every pinned connection back to the pool (the store is closing; no
        thread may use them any more)."""
        with self._lock:
            pins = list(self._pins)
            self._pins = weakref.WeakSet()
        for pin in pins:
            pin.release()
