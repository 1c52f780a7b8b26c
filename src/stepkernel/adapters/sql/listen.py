"""Waiting for work with PostgreSQL ``LISTEN``/``NOTIFY``.

A commit that enqueues messages (and a ``release``) runs ``pg_notify`` on
:data:`~stepkernel.adapters.sql.schema.NOTIFY_CHANNEL` in its own transaction; the
database delivers the notification when, and only if, that transaction commits, after
its rows are visible.  A :class:`Listener` holds one dedicated connection per store,
taken out of the engine's pool (``detach``) and switched to autocommit, that has run
``LISTEN``; :meth:`Listener.wait` returns as soon as a notification arrives, or after the
timeout.

Threads of one store share the connection: one of them reads it while the others wait
on a condition, and whoever reads a notification wakes them all.  Notifications that
arrive while nobody waits are buffered by the connection, so a worker that found the
queue empty and then waits still wakes at once for a commit that came in between: the
wake-up is never lost once the connection listens (the very first wait of a store opens
it).  A notification can also be stale (a worker that leased since): the worst case is
one empty ``lease``.  Busy workers do not wait, so each ``lease`` first drains what the
connection holds (:meth:`Listener.drain`, no waiting): PostgreSQL keeps a notification
queued until every listening backend has consumed it.

Only psycopg 3.2+ (``postgresql+psycopg``) connections can listen; :func:`can_listen`
tells (elsewhere the store's ``wait_for_work`` sleeps).
A connection that fails is dropped, the wait sleeps out its timeout, and the next wait
opens a new connection.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine

from stepkernel.adapters.sql.schema import NOTIFY_CHANNEL

__all__ = ["Listener", "can_listen"]

log = logging.getLogger("stepkernel.sql")


def can_listen(engine: Engine) -> bool:
    """Whether the store can wait for notifications on *engine*: PostgreSQL through
    psycopg 3.2 or newer (``Connection.notifies`` with a timeout)."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return False
    connection_class = getattr(engine.dialect.loaded_dbapi, "Connection", None)
    notifies = getattr(connection_class, "notifies", None)
    try:
        return notifies is not None and "stop_after" in inspect.signature(notifies).parameters
    except (TypeError, ValueError):
        return False


class Listener:
    """One listening connection shared by the threads of a store (see module)."""

    def __init__(self, engine: Engine, *, channel: str = NOTIFY_CHANNEL) -> None:
        self._engine = engine
        self._channel = channel
        self._connection: Any = None  # a psycopg.Connection, opened at the first wait
        self._condition = threading.Condition()
        self._reading = False  # one thread at a time reads the connection
        self._generation = 0  # bumped for every batch of notifications read
        self._closed = False
        self._stopped = threading.Event()  # set by close(): ends a failed reader's sleep

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives (``True``) or *timeout* seconds pass
        (``False``).  When the connection cannot be opened or fails, it is dropped and
        the wait sleeps out its timeout (the next wait opens a new one)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            seen = self._generation
            while True:
                if self._generation != seen:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                if not self._reading:
                    self._reading = True
                    break
                self._condition.wait(remaining)
        woke = False
        try:
            woke = self._read(remaining)
        except Exception as error:  # any failure: drop the connection, reopen later
            log.warning(
                "listening connection failed (%s: %s); sleeping instead",
                type(error).__name__,
                error,
            )
            self._drop()
            self._stopped.wait(max(0.0, deadline - time.monotonic()))
        finally:
            with self._condition:
                self._reading = False
                if woke:
                    self._generation += 1
                if self._closed:
                    self._drop()
                self._condition.notify_all()
        return woke

    def drain(self) -> None:
        """Read, without waiting, the notifications the connection holds (waking the
        threads that wait), unless a thread is reading it already.

        The store calls this at the start of every ``lease``: busy workers never wait,
        and a connection nobody reads would make its server backend stop consuming
        PostgreSQL's notification queue, which then grows for as long as the workers stay
        busy.  Draining before the lease's ``SELECT`` loses no wake-up: a notification
        read here belongs to a commit that ``SELECT`` already sees."""
        with self._condition:
            if self._reading or self._connection is None or self._closed:
                return
            self._reading = True
        woke = False
        try:
            woke = any(True for _ in self._connection.notifies(timeout=0))
        except Exception:  # the next wait reports it and opens a new connection
            self._drop()
        finally:
            with self._condition:
                self._reading = False
                if woke:
                    self._generation += 1
                if self._closed:
                    self._drop()
                self._condition.notify_all()

    def _read(self, timeout: float) -> bool:
        """Read the connection for up to *timeout* seconds; whether a notification came."""
        connection = self._connection
        if connection is None:
            connection = self._connection = self._open()
        return any(True for _ in connection.notifies(timeout=timeout, stop_after=1))

    def _open(self) -> Any:
        """A pooled connection that runs ``LISTEN``, then detached from the pool and
        switched to autocommit.  A pooled connection found dead invalidates the pool
        (as the store's statements do) and a fresh one is tried."""
        for attempt in (1, 2):
            raw = self._engine.raw_connection()
            connection = raw.driver_connection
            try:
                if connection is None:
                    raise RuntimeError("the engine gave no driver connection")
                connection.execute(f'LISTEN "{self._channel}"')
                connection.commit()
            except Exception as error:
                gone = False
                driver_error: Any = error  # a DBAPI Error (PEP 249 types it no further)
                with contextlib.suppress(Exception):
                    gone = bool(self._engine.dialect.is_disconnect(driver_error, connection, None))
                    if gone:
                        self._engine.pool._invalidate(raw, error)
                with contextlib.suppress(Exception):
                    raw.close()
                if gone and attempt == 1:
                    continue
                raise
            raw.detach()  # ours for good: the pool forgets it and makes another
            connection.autocommit = True
            return connection
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        """Close the connection (at once, or when the thread reading it returns)."""
        with self._condition:
            self._closed = True
            self._stopped.set()
            if not self._reading:
                self._drop()
            self._condition.notify_all()
