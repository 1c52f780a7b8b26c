"""Contract-suite hooks for the bundled text-storing adapters (SQL and Redis).

Mix :class:`SqlBackdoors` or :class:`RedisBackdoors` into a
:class:`~stepkernel.testing.contract.WorkflowStoreContract` subclass to give it the
``corrupt`` and ``corrupt_message`` hooks: they damage stored text straight through the
backend (SQLAlchemy on the store's engine, the Redis client on the store's keys) so the
corruption tests run.  Each imports its adapter only when used.
"""

from __future__ import annotations

from typing import Any

from stepkernel.domain.records import RecordKey
from stepkernel.ports.store import WorkflowStore

__all__ = ["RedisBackdoors", "SqlBackdoors", "empty_sql_tables"]

BROKEN_RECORD = "{not json"
"""The text a damaged record is given."""


def empty_sql_tables(engine: Any) -> None:
    """Delete every row of the store's tables on *engine* (a SQLAlchemy engine), the
    schema version kept: an empty store for the next test."""
    from stepkernel.adapters.sql.schema import meta, metadata

    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            if table is not meta:
                conn.execute(table.delete())


class SqlBackdoors:
    """``corrupt``/``corrupt_message`` for :class:`~stepkernel.adapters.sql.SqlWorkflowStore`."""

    def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
        """Overwrite record *key*'s stored text (its version column stays)."""
        from stepkernel.adapters.sql import SqlWorkflowStore
        from stepkernel.adapters.sql.schema import records

        assert isinstance(store, SqlWorkflowStore)
        with store.engine.begin() as conn:
            conn.execute(
                records.update()
                .where(records.c.kind == key[0], records.c.key == key[1])
                .values(data=BROKEN_RECORD)
            )

    def corrupt_message(self, store: WorkflowStore, message_id: str, text: str) -> None:
        """Overwrite queued message *message_id*'s stored text."""
        from stepkernel.adapters.sql import SqlWorkflowStore
        from stepkernel.adapters.sql.schema import messages

        assert isinstance(store, SqlWorkflowStore)
        with store.engine.begin() as conn:
            conn.execute(messages.update().where(messages.c.id == message_id).values(data=text))


class RedisBackdoors:
    """``corrupt``/``corrupt_message`` for
    :class:`~stepkernel.adapters.redis.RedisWorkflowStore` (through its own client)."""

    def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
        """Keep record *key*'s stored version, replace its text."""
        from stepkernel.adapters.redis import RedisWorkflowStore

        assert isinstance(store, RedisWorkflowStore)
        name = store.keys.record(key)
        stored = store.client.get(name)
        if isinstance(stored, str):
            stored = stored.encode()
        version = (stored if isinstance(stored, bytes) else b"1|").partition(b"|")[0]
        store.client.set(name, version + b"|" + BROKEN_RECORD.encode())

    def corrupt_message(self, store: WorkflowStore, message_id: str, text: str) -> None:
        """Overwrite queued message *message_id*'s stored text."""
        from stepkernel.adapters.redis import RedisWorkflowStore

        assert isinstance(store, RedisWorkflowStore)
        store.client.hset(store.keys.message(message_id), "d", text)
