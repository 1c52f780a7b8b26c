"""How the store runs its prepared statements on one pooled connection.

:class:`DirectSession` executes the compiled text on the DBAPI cursor of a connection
checked out of the engine's pool (``engine.raw_connection()``), and wraps driver errors
the way SQLAlchemy does (:meth:`sqlalchemy.exc.DBAPIError.instance`; on a disconnect the
connection is invalidated, and so is every connection the pool made before it, which are
replaced at their next checkout: after a server restart or a killed backend one call
fails and the next one reconnects).  :class:`CoreSession` runs the same statements through
``Connection.execute``: the generic path for drivers whose compiled form cannot be run
as is.  :func:`transaction` opens either on the engine, inside a transaction or (for a
single atomic statement) without one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Engine, exc
from sqlalchemy.engine import Connection

from stepkernel.adapters.sql.engine import READ_ONLY, begin, switches_autocommit
from stepkernel.adapters.sql.statements import Prepared

__all__ = ["CoreSession", "DirectSession", "Session", "core_rows", "transaction"]


class Session(Protocol):
    """Statement execution on one connection (see module)."""

    def rows(self, prepared: Prepared, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Every row *prepared* selects with *params*."""

    def run(self, prepared: Prepared, params: Mapping[str, Any]) -> int:
        """Execute *prepared* once; the number of rows it affected."""

    def run_many(self, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> int:
        """Execute *prepared* for every parameter row (``executemany``); the affected
        row count the driver reports (a total only where the dialect says it is sane)."""


class DirectSession:
    """Prepared statements executed on a pooled DBAPI connection's cursor."""

    __slots__ = ("_cursor", "_engine", "_raw")

    def __init__(self, engine: Engine, raw: Any) -> None:
        self._engine = engine
        self._raw = raw
        self._cursor = raw.cursor()

    def rows(self, prepared: Prepared, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        cursor = self._cursor
        try:
            cursor.execute(prepared.sql, prepared.params(params))
            found: Sequence[Sequence[Any]] = cursor.fetchall()
        except self._engine.dialect.loaded_dbapi.Error as error:
            raise self.wrap(error, prepared.sql, params) from error
        return found

    def run(self, prepared: Prepared, params: Mapping[str, Any]) -> int:
        cursor = self._cursor
        try:
            cursor.execute(prepared.sql, prepared.params(params))
        except self._engine.dialect.loaded_dbapi.Error as error:
            raise self.wrap(error, prepared.sql, params) from error
        return int(cursor.rowcount)

    def run_many(self, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> int:
        cursor = self._cursor
        try:
            if len(rows) == 1:
                cursor.execute(prepared.sql, prepared.params(rows[0]))
            else:
                cursor.executemany(prepared.sql, list(map(prepared.params, rows)))
        except self._engine.dialect.loaded_dbapi.Error as error:
            raise self.wrap(error, prepared.sql, rows, many=True) from error
        return int(cursor.rowcount)

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        """Execute the driver text *sql* with the driver parameters *params* once."""
        try:
            self._cursor.execute(sql, params)
        except self._engine.dialect.loaded_dbapi.Error as error:
            raise self.wrap(error, sql, params) from error

    def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """Every row the driver text *sql* returns with the driver parameters *params*."""
        cursor = self._cursor
        try:
            cursor.execute(sql, params)
            found: Sequence[Sequence[Any]] = cursor.fetchall()
        except self._engine.dialect.loaded_dbapi.Error as error:
            raise self.wrap(error, sql, params) from error
        return found

    def wrap(
        self, error: Exception, sql: str | None, params: Any, *, many: bool = False
    ) -> BaseException:
        """*error* as SQLAlchemy would raise it (e.g. :class:`sqlalchemy.exc.IntegrityError`),
        invalidating the connection when the driver says it is gone."""
        dialect = self._engine.dialect
        gone = False
        driver_error: Any = error  # a DBAPI ``Error`` (PEP 249 types it no further)
        with contextlib.suppress(Exception):
            gone = bool(dialect.is_disconnect(driver_error, self._raw, self._cursor))
        if gone:
            try:
                # What Connection does on a disconnect: this connection and every older
                # one in the pool are replaced at their next checkout.
                self._engine.pool._invalidate(self._raw, error)
            except Exception:  # at least drop this connection
                with contextlib.suppress(Exception):
                    self._raw.invalidate(error)
        return exc.DBAPIError.instance(
            sql,
            params,
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=gone,
            dialect=dialect,
            ismulti=many,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._cursor.close()


class CoreSession:
    """Prepared statements executed through SQLAlchemy's ``Connection.execute``."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def connection(self) -> Connection:
        """The SQLAlchemy connection the session runs on."""
        return self._conn

    def rows(self, prepared: Prepared, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self._conn.execute(prepared.statement, params).all()

    def run(self, prepared: Prepared, params: Mapping[str, Any]) -> int:
        result: Any = self._conn.execute(prepared.statement, params)
        return int(result.rowcount)

    def run_many(self, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> int:
        result: Any = self._conn.execute(prepared.statement, list(rows))
        return int(result.rowcount)


@contextlib.contextmanager
def transaction(
    engine: Engine, *, direct: bool, read: bool = False, atomic: bool = True
) -> Iterator[Session]:
    """A session on a connection checked out of *engine*'s pool, committed when the
    block ends and rolled back if it raises.

    *read* opens a read transaction (a deferred ``BEGIN`` on :func:`sqlite_engine`
    engines).  ``atomic=False`` opens none: for one statement, which every database
    runs atomically on its own (the pool's reset on return ends any transaction a
    PEP 249 driver began implicitly; psycopg connections are switched to autocommit
    for the statement instead, which saves the ``BEGIN`` and ``ROLLBACK`` round trips).
    *direct* picks :class:`DirectSession`.
    """
    if not direct:
        with engine.connect() as conn:
            info = conn.info
            if read or not atomic:  # Connection.execute would begin a write transaction
                info[READ_ONLY] = True
            try:
                outer = conn.begin()
            finally:
                info.pop(READ_ONLY, None)
            with outer:
                yield CoreSession(conn)
        return
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        raw = engine.raw_connection()
    except dbapi_error as error:
        raise exc.DBAPIError.instance(
            None, None, error, dbapi_error, hide_parameters=True, dialect=engine.dialect
        ) from error
    try:
        session = DirectSession(engine, raw)
        lone = not atomic and switches_autocommit(engine)
        try:
            if lone:
                try:
                    driver: Any = raw.driver_connection
                    driver.autocommit = True
                except dbapi_error as error:
                    raise session.wrap(error, "SET autocommit", None) from error
            if atomic:
                try:
                    begin(engine, raw, read=read)
                except dbapi_error as error:
                    raise session.wrap(error, "BEGIN", None) from error
            yield session
            if atomic:
                try:
                    engine.dialect.do_commit(raw)
                except dbapi_error as error:
                    raise session.wrap(error, "COMMIT", None) from error
        except BaseException:
            if atomic:
                with contextlib.suppress(Exception):
                    engine.dialect.do_rollback(raw)
            raise
        finally:
            session.close()
            if lone:
                try:
                    driver = raw.driver_connection
                    driver.autocommit = False
                except Exception:  # a broken connection: do not pool it
                    if raw.is_valid:
                        with contextlib.suppress(Exception):
                            raw.invalidate()
    finally:
        raw.close()


def core_rows(engine: Engine, statement: Any) -> Sequence[Sequence[Any]]:
    """Every row of a one-off Core *statement* (built per call, e.g. a filtered query),
    read through ``Connection.execute`` and its compiled cache in a read transaction."""
    with transaction(engine, direct=False, read=True) as session:
        assert isinstance(session, CoreSession)
        return session.connection.execute(statement).all()
