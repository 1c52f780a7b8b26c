"""The SQL adapter (SQLAlchemy Core): SQLite by default, PostgreSQL, MySQL/MariaDB.

Needs the ``sql`` extra (``pip install stepkernel[sql]``).
"""

from stepkernel.adapters.sql.schema import SCHEMA_VERSION, create_schema, metadata
from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine

__all__ = ["SCHEMA_VERSION", "SqlWorkflowStore", "create_schema", "metadata", "sqlite_engine"]
