"""The SQL schema of :class:`~stepkernel.adapters.sql.store.SqlWorkflowStore`.

Four tables, all prefixed ``sk_``; portable SQL (SQLite, PostgreSQL, MySQL/MariaDB):
bounded ``VARCHAR`` keys, ``TEXT`` payloads, ``DOUBLE`` timestamps, no dialect features.

``sk_records``
    One row per record, primary key ``(kind, key)``.  ``data`` is the domain's
    :func:`~stepkernel.domain.encoding.encode_record` text (the only source a record is
    rebuilt from); ``version`` mirrors the record's version for optimistic checks.  For
    actions the columns ``root_id``, ``status``, ``actor_type``, ``actor_key``, ``name``,
    ``created_at`` and ``callbacks`` are copies of record fields, indexed for
    :meth:`~stepkernel.ports.store.WorkflowStore.find_actions`; they are ``NULL`` for
    lanes and achievements (``callbacks`` also for actions written by schema version 1,
    which ``find_actions`` then decodes to filter).

``sk_messages``
    One row per queued message, primary key ``id``.  ``data`` is the domain's
    :func:`~stepkernel.domain.encoding.encode_message` text (every field, ``preload``
    included); ``kind``, ``action_id`` and ``available_at`` are copies.
    ``owner``/``lease_until`` describe the current lease (``NULL``/``0`` when none),
    ``deliveries`` counts leases granted.  ``due`` is ``available_at`` when not leased and
    ``lease_until`` when leased: the moment the row becomes leasable, so leasing and
    ``next_due`` are one indexed range scan on ``due``.

``sk_dead_messages``
    Queued messages that did not decode, moved out of ``sk_messages`` by the lease that
    found them (see :class:`~stepkernel.ports.store.DeadLetter`): the row's ``id``,
    ``action_id``, ``data`` and ``deliveries`` as they were, the ``reason`` and
    ``dead_at``.  Added by schema version 2.

``sk_meta``
    Key/value pairs; ``schema_version`` records :data:`SCHEMA_VERSION`.

Versions: :data:`SCHEMA_VERSION` is recorded in ``sk_meta``; creating, checking and
upgrading the schema is :mod:`.versions`.  Version 2 added ``sk_dead_messages`` and the
``callbacks`` column of ``sk_records`` with its index.
"""

from __future__ import annotations

from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql

SCHEMA_VERSION = 2
"""The schema version this code reads and writes (stored in ``sk_meta``)."""

KEY_LENGTH = 255
"""Longest record key (action ids, lane and checksum keys) the columns hold."""

MESSAGE_ID_LENGTH = 400
"""Longest message id (ids embed action ids plus a kind prefix and suffix)."""

SCHEMA_VERSION_KEY = "schema_version"

NOTIFY_CHANNEL = "stepkernel_work"
"""The PostgreSQL ``LISTEN``/``NOTIFY`` channel of commits that enqueue messages."""

_PAYLOAD = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
"""Record and message text: ``TEXT`` (unbounded) except on MySQL, where ``TEXT`` stops at
64 KiB and big actions need ``LONGTEXT``."""

metadata = MetaData()

records = Table(
    "sk_records",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("key", String(KEY_LENGTH), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("data", _PAYLOAD, nullable=False),
    Column("root_id", String(KEY_LENGTH), nullable=True),
    Column("status", String(32), nullable=True),
    Column("actor_type", String(KEY_LENGTH), nullable=True),
    Column("actor_key", String(KEY_LENGTH), nullable=True),
    Column("name", String(KEY_LENGTH), nullable=True),
    Column("created_at", Double, nullable=True),
    Column("callbacks", String(16), nullable=True),
    Index("ix_sk_records_root", "root_id", "created_at"),
    Index("ix_sk_records_status", "status", "created_at"),
    Index("ix_sk_records_actor", "actor_type", "actor_key", "name"),
    Index("ix_sk_records_callbacks", "callbacks"),
)

messages = Table(
    "sk_messages",
    metadata,
    Column("id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("action_id", String(KEY_LENGTH), nullable=False),
    Column("data", _PAYLOAD, nullable=False),
    Column("available_at", Double, nullable=False),
    Column("owner", String(KEY_LENGTH), nullable=True),
    Column("lease_until", Double, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("due", Double, nullable=False),
    Index("ix_sk_messages_due", "due"),
    Index("ix_sk_messages_action", "action_id"),
)

dead_messages = Table(
    "sk_dead_messages",
    metadata,
    Column("id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("action_id", String(KEY_LENGTH), nullable=True),
    Column("data", _PAYLOAD, nullable=False),
    Column("reason", Text, nullable=False),
    Column("dead_at", Double, nullable=False),
    Column("deliveries", Integer, nullable=False),
)

meta = Table(
    "sk_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)
