"""Fixtures for tests against real servers (see :mod:`servers` for the skip policy).

``postgres_url`` is a database created for this test session and dropped after it, so
runs never see each other's rows; ``redis_url`` is a Redis database number flushed
before each use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from servers import POSTGRES_URL, REDIS_URL, unavailable


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (dropped at the end)."""
    try:
        import sqlalchemy
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        unavailable("PostgreSQL", f"SQLAlchemy is not installed: {exc}")
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"stepkernel_test_{os.getpid()}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except Exception as exc:
        admin.dispose()
        unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    url = sqlalchemy.engine.make_url(POSTGRES_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis URL, after checking the server answers."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        unavailable("Redis", f"redis-py is not installed: {exc}")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        unavailable("Redis", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    return REDIS_URL
