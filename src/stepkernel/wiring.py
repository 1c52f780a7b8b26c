"""Choosing a store happens here, at call time, and nowhere else.

``open_store("memory://")``, ``open_store("sqlite:///path/to/file.db")`` (the embedded
default) or ``open_store("sqlite://")`` for an in-memory SQLite database;
``open_store("postgresql://user@host/db")`` (psycopg 3) or
``open_store("mysql://user@host/db")`` (PyMySQL; ``mariadb://`` too) for a database
server, any ``+driver`` in the URL kept.  Importing this module opens nothing; drivers
are imported only when a URL asks for them.
"""

from __future__ import annotations

from typing import Any

from stepkernel.domain.errors import InvalidInputError
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import WorkflowStore
from stepkernel.runtime.app import App
from stepkernel.runtime.registry import Registry

DEFAULT_URL = "sqlite:///stepkernel.db"

_SERVER_SCHEMES = (
    *("postgresql:", "postgresql+", "postgres:"),
    *("mysql:", "mysql+", "mariadb:", "mariadb+"),
)
"""URL prefixes of the database servers the SQL store runs on."""


def open_store(
    url: str = DEFAULT_URL, *, clock: Clock | None = None, pool_size: int | None = None
) -> WorkflowStore:
    """The store for *url*; raises :class:`InvalidInputError` for an unknown scheme.

    *pool_size* sizes a database server's connection pool (default 8; see
    :func:`~stepkernel.adapters.sql.server.server_engine`): give it at least the number
    of threads that use the store, as each keeps a connection (a ``stepkernel worker``
    asks for its threads plus four).  Other stores ignore it."""
    if url.startswith("memory:"):
        from stepkernel.adapters.memory import InMemoryWorkflowStore

        return InMemoryWorkflowStore(clock=clock)
    if url.startswith("sqlite:"):
        from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine

        path = url[len("sqlite://") :]
        path = path[1:] if path.startswith("/") else path
        return SqlWorkflowStore(sqlite_engine(path or ":memory:"), clock=clock)
    if url.startswith(_SERVER_SCHEMES):
        from stepkernel.adapters.sql.server import server_engine
        from stepkernel.adapters.sql.store import SqlWorkflowStore

        engine = (
            server_engine(url) if pool_size is None else server_engine(url, pool_size=pool_size)
        )
        return SqlWorkflowStore(engine, clock=clock)
    if url.startswith("redis"):
        from stepkernel.adapters.redis import RedisWorkflowStore

        # redis://host:6379/0 or rediss://...; a ?prefix=name query sets the key prefix
        return RedisWorkflowStore(url, clock=clock)
    raise InvalidInputError(
        f"no store for URL {url!r} (memory://, sqlite:///file.db, postgresql://..., "
        "mysql://..., redis://...)",
        url=url,
    )


def open_app(registry: Registry, url: str = DEFAULT_URL, **options: Any) -> App:
    """An :class:`App` for *registry* on the store at *url*; ``clock`` and ``pool_size``
    go to :func:`open_store`, the other *options* to :class:`App`."""
    clock = options.pop("clock", None)
    pool_size = options.pop("pool_size", None)
    return App(registry, open_store(url, clock=clock, pool_size=pool_size), **options)
