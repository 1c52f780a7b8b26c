"""The SQL adapter (SQLAlchemy Core): SQLite by default, PostgreSQL, MySQL/MariaDB.

Needs the ``sql`` extra (``pip install stepkernel[sql]``); PostgreSQL the ``postgres``
extra (psycopg 3).  :func:`sqlite_engine` and :func:`server_engine` build engines the
store is tuned for.
"""

from stepkernel.adapters.sql.schema import SCHEMA_VERSION, metadata
from stepkernel.adapters.sql.server import server_engine
from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine
from stepkernel.adapters.sql.versions import (
    UPGRADES,
    check_schema,
    create_schema,
    ddl,
    upgrade_ddl,
)

__all__ = [
    "SCHEMA_VERSION",
    "UPGRADES",
    "SqlWorkflowStore",
    "check_schema",
    "create_schema",
    "ddl",
    "metadata",
    "server_engine",
    "sqlite_engine",
    "upgrade_ddl",
]
