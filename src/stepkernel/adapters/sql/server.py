"""Engines for database servers: PostgreSQL (psycopg 3) and MySQL/MariaDB (PyMySQL).

:func:`server_engine` turns a URL into an :class:`~sqlalchemy.Engine` configured the way
:class:`~stepkernel.adapters.sql.store.SqlWorkflowStore` expects: the isolation level its
locking is designed for, a pool sized for a worker's threads, and the driver the store
is tested with when the URL names none.  Building the engine opens no connection.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from stepkernel.domain.errors import InvalidInputError

__all__ = ["DRIVERS", "ISOLATION", "server_engine"]

DRIVERS = {"postgresql": "psycopg", "postgres": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
"""The driver used when a URL names only the database (``postgresql://...``)."""

ISOLATION = {"postgresql": "READ COMMITTED", "mysql": "REPEATABLE READ"}
"""The isolation level the store's locking is designed for, per backend.

PostgreSQL: ``READ COMMITTED`` -- every statement sees the latest commits, version-checked
updates re-check their ``WHERE`` on the row they waited for, and absent keys are held by
placeholders.  MySQL/MariaDB: ``REPEATABLE READ`` (InnoDB's default) -- a locking read of
an absent key takes a gap lock, which is what keeps a guarded absent key absent."""


def server_engine(url: str | URL, *, pool_size: int = 8, **options: Any) -> Engine:
    """An engine on the PostgreSQL or MySQL/MariaDB server at *url* for the SQL store.

    ``postgresql://`` and ``postgres://`` mean ``postgresql+psycopg://``; ``mysql://``
    and ``mariadb://`` mean ``+pymysql``; a URL naming its driver keeps it.  The pool
    holds *pool_size* connections (plus as many overflow): one per worker thread, one
    for the ``LISTEN`` connection and a few for the app.  *options* go to
    :func:`sqlalchemy.create_engine` and override these defaults.  Raises
    :class:`InvalidInputError` for another kind of URL.
    """
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"pool_size must be a positive int, not {pool_size!r}")
    try:
        parsed = make_url(url)
    except Exception as error:  # SQLAlchemy raises several types here
        raise InvalidInputError(f"not a database URL: {error}", url=str(url)) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in DRIVERS:
        raise InvalidInputError(
            f"no server engine for {backend!r} URLs (postgresql://, mysql://, mariadb://)",
            url=parsed.render_as_string(hide_password=True),
        )
    backend = "postgresql" if backend == "postgres" else backend
    parsed = parsed.set(drivername=f"{backend}+{driver or DRIVERS[backend]}")
    defaults: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "isolation_level": ISOLATION["postgresql" if backend == "postgresql" else "mysql"],
    }
    if backend != "postgresql":
        defaults["pool_recycle"] = 3600  # before MySQL's wait_timeout drops idle ones
    return create_engine(parsed, **{**defaults, **options})
