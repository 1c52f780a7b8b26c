"""The connections, transactions and error handling under the SQL store.

:class:`SqlPlumbing` is the base of :class:`~stepkernel.adapters.sql.store.SqlWorkflowStore`:
it checks the engine, picks how statements run (straight on the DBAPI cursor, one
statement per commit on PostgreSQL, pinned connections, see :mod:`.pinned`), holds
SQLite's in-process write lock, opens the kinds of transaction the store needs and turns
driver errors into :class:`StoreUnavailableError` (redoing lost races, :mod:`.races`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, exc
from sqlalchemy.pool import QueuePool, StaticPool

from stepkernel.adapters.sql.dead import DeadStatements
from stepkernel.adapters.sql.engine import autocommits_reads, pool_lock, switches_autocommit
from stepkernel.adapters.sql.listen import Listener, can_listen
from stepkernel.adapters.sql.pinned import PinnedConnections
from stepkernel.adapters.sql.races import ATTEMPTS, lost_race, pause, sqlstate
from stepkernel.adapters.sql.session import Session, transaction
from stepkernel.adapters.sql.statements import Statements
from stepkernel.domain.errors import ConflictError, StoreUnavailableError

__all__ = ["SqlPlumbing"]

_T = TypeVar("_T")


class SqlPlumbing:
    """Connections, transactions and driver errors for one engine (see module)."""

    def __init__(self, engine: Engine, *, direct: bool, notify: bool) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be a sqlalchemy Engine, not {type(engine).__name__}")
        for name, flag in (("direct", direct), ("notify", notify)):
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
        self.commits = 0
        self.retries = 0
        self._count_lock = threading.Lock()
        self._closed = False
        self._engine = engine
        driver_error = getattr(engine.dialect.loaded_dbapi, "Error", None)
        self._errors: tuple[type[BaseException], ...] = (exc.SQLAlchemyError,) + (
            (driver_error,)
            if isinstance(driver_error, type) and issubclass(driver_error, BaseException)
            else ()
        )
        self._sql = Statements(engine.dialect)
        self._dead = DeadStatements(engine.dialect)
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

    def _count(self) -> None:
        with self._count_lock:
            self.commits += 1

    def _write_many(
        self, operation: str, prepared: Any, params: list[dict[str, Any]], *, notify: bool = False
    ) -> None:
        def attempt() -> None:
            with self._write_lock, self._write() as session:
                session.run_many(prepared, params)
                if notify and self._sql.notify is not None:
                    session.run(self._sql.notify, {})

        self._retrying(operation, attempt)
