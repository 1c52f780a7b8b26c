"""The SQL schema of :class:`~stepkernel.adapters.sql.store.SqlWorkflowStore`.

Four tables, all prefixed ``sk_``; portable SQL (SQLite, PostgreSQL, MySQL/MariaDB):
bounded ``VARCHAR`` keys, ``TEXT`` payloads, ``DOUBLE`` timestamps, no dialect features.

``sk_records``
    One row per record, primary key ``(kind, key)``.  ``data`` is the domain's
    :func:`~stepkernel.domain.encoding.encode_record` text (the only source a record is
    rebuilt from); ``version`` mirrors the record's version for optimistic checks.  For
    actions the columns ``root_id``, ``status``, ``actor_type``, ``actor_key``, ``name`` and
    ``created_at`` are copies of record fields, indexed for
    :meth:`~stepkernel.ports.store.WorkflowStore.find_actions`; they are ``NULL`` for
    lanes and achievements.

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

Versions.  :func:`create_schema` (what the store runs by default) creates missing tables,
upgrades an older schema it knows (:data:`UPGRADES`) and records :data:`SCHEMA_VERSION`;
:func:`check_schema` only checks, for databases whose schema is installed by your own
migrations (:func:`ddl` renders the statements that install it on a dialect,
:func:`upgrade_ddl` those that bring an older version up).  Both raise
:class:`~stepkernel.domain.errors.StoreError` with the fields ``stored_version`` and
``code_version`` when the database holds another version that they cannot use (or none):
a newer stepkernel wrote it, or an older schema awaits your migration.  The version only
moves when the tables do.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Dialect,
    Double,
    Engine,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Update,
    exc,
    inspect,
    select,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from stepkernel.domain.errors import StoreError, StoreUnavailableError

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
    Index("ix_sk_records_root", "root_id", "created_at"),
    Index("ix_sk_records_status", "status", "created_at"),
    Index("ix_sk_records_actor", "actor_type", "actor_key", "name"),
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


UPGRADES: dict[int, tuple[Table, ...]] = {1: (dead_messages,)}
"""For each older schema version this code upgrades, the tables the next version adds
(every upgrade so far only adds tables)."""


def create_schema(engine: Engine) -> None:
    """Create the ``sk_`` tables if missing, upgrade an older schema listed in
    :data:`UPGRADES`, and record or check the schema version.

    Safe to call from several processes at once and on every start (an upgrade moves
    the stored version one step at a time with a compare-and-set).  Raises
    :class:`StoreError` when the database holds a schema version other than
    :data:`SCHEMA_VERSION` that it cannot upgrade (a newer one was written by a newer
    stepkernel; an unknown or unreadable one), and :class:`StoreUnavailableError` when
    the database fails.
    """
    try:
        _create_tables(engine)  # includes the tables every upgrade adds
        stored = _stored_version(engine)
        while stored < SCHEMA_VERSION and stored in UPGRADES:
            stored = _advance_version(engine, stored)
    except exc.SQLAlchemyError as error:
        raise StoreUnavailableError(
            f"cannot create the stepkernel schema: {error}", operation="create_schema"
        ) from error
    _check_version(stored)


def check_schema(engine: Engine) -> None:
    """Check, creating nothing, that the database holds the ``sk_`` tables at
    :data:`SCHEMA_VERSION` (for schemas installed by your own migrations).

    Raises :class:`StoreError` (``stored_version``, ``code_version``) when the version
    differs or when ``sk_meta`` or its ``schema_version`` row is missing
    (``stored_version`` ``None``), and :class:`StoreUnavailableError` when the database
    fails.
    """
    query = select(meta.c.value).where(meta.c.key == SCHEMA_VERSION_KEY)
    try:
        with engine.connect() as conn:
            installed = inspect(conn).has_table(meta.name)
            value = conn.execute(query).scalar_one_or_none() if installed else None
    except exc.SQLAlchemyError as error:
        raise StoreUnavailableError(
            f"cannot read the stepkernel schema version: {error}", operation="check_schema"
        ) from error
    if value is None:
        raise StoreError(
            "the stepkernel schema is not installed (no schema_version in sk_meta): "
            "create it with create=True or with the statements of schema.ddl()",
            stored_version=None,
            code_version=SCHEMA_VERSION,
        )
    _check_version(_parse_version(value))


def _check_version(stored: int) -> None:
    if stored != SCHEMA_VERSION:
        advice = (
            "upgrade stepkernel"
            if stored > SCHEMA_VERSION
            else f"migrate the database: the statements of upgrade_ddl(dialect, {stored}), "
            "or open the store with create=True"
            if stored in UPGRADES
            else "this stepkernel cannot upgrade it"
        )
        raise StoreError(
            f"database schema version {stored} does not match this stepkernel's "
            f"{SCHEMA_VERSION} ({advice})",
            stored_version=stored,
            code_version=SCHEMA_VERSION,
        )


def _parse_version(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise StoreError(
            f"unreadable schema version {value!r} in sk_meta",
            stored_version=value,
            code_version=SCHEMA_VERSION,
        ) from None


def _tidy(compiled: object) -> str:
    """Compiled DDL without trailing blanks, indented with spaces."""
    lines = str(compiled).strip().expandtabs(4).splitlines()
    return "\n".join(line.rstrip() for line in lines)


def ddl(dialect: Dialect | str) -> list[str]:
    """The statements that install this schema on *dialect* (or a dialect name such as
    ``"postgresql"``, ``"mysql"``, ``"sqlite"``): every ``CREATE TABLE`` and ``CREATE
    INDEX``, then the ``INSERT`` recording :data:`SCHEMA_VERSION` (for teams that run
    their own migrations; the store's ``create=True`` does the same)."""
    if isinstance(dialect, str):
        dialect = make_url(f"{dialect}://").get_dialect()()
    statements = []
    for table in metadata.sorted_tables:
        statements.extend(_table_ddl(table, dialect))
    insert = meta.insert().values(key=SCHEMA_VERSION_KEY, value=str(SCHEMA_VERSION))
    statements.append(_literal(insert, dialect))
    return statements


def _literal(statement: Insert | Update, dialect: Dialect) -> str:
    """*statement* with its values inlined, names quoted as *dialect* needs (``key`` is
    reserved on MySQL)."""
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def upgrade_ddl(dialect: Dialect | str, from_version: int) -> list[str]:
    """The statements that bring a schema at *from_version* up to
    :data:`SCHEMA_VERSION` on *dialect* (as for :func:`ddl`), each step's tables and
    indexes followed by the ``UPDATE`` of ``schema_version``; for teams that run their
    own migrations (``create_schema`` applies the same).  Raises :class:`StoreError`
    for a version this code cannot upgrade."""
    if isinstance(dialect, str):
        dialect = make_url(f"{dialect}://").get_dialect()()
    if from_version == SCHEMA_VERSION:
        return []
    if from_version not in UPGRADES or from_version > SCHEMA_VERSION:
        raise StoreError(
            f"no upgrade from schema version {from_version!r} to {SCHEMA_VERSION}",
            stored_version=from_version,
            code_version=SCHEMA_VERSION,
        )
    statements: list[str] = []
    for version in range(from_version, SCHEMA_VERSION):
        for table in UPGRADES[version]:
            statements.extend(_table_ddl(table, dialect))
        statements.append(_literal(_version_update(version), dialect))
    return statements


def _table_ddl(table: Table, dialect: Dialect) -> list[str]:
    statements = [_tidy(CreateTable(table).compile(dialect=dialect))]
    statements.extend(
        _tidy(CreateIndex(index).compile(dialect=dialect))
        for index in sorted(table.indexes, key=lambda index: str(index.name))
    )
    return statements


def _advance_version(engine: Engine, stored: int) -> int:
    """Move the stored version from *stored* to the next (its tables exist by now);
    whichever process does it first wins, the others read the result."""
    with engine.begin() as conn:
        conn.execute(_version_update(stored))
    return _stored_version(engine)


def _version_update(stored: int) -> Update:
    """Compare-and-set of ``schema_version`` from *stored* to the next version."""
    row = (meta.c.key == SCHEMA_VERSION_KEY) & (meta.c.value == str(stored))
    return meta.update().where(row).values(value=str(stored + 1))


def _create_tables(engine: Engine) -> None:
    try:
        metadata.create_all(engine, checkfirst=True)
    except exc.DBAPIError:
        # Another process created the tables between the check and the CREATE: the
        # second attempt finds them all and creates nothing.
        metadata.create_all(engine, checkfirst=True)


def _stored_version(engine: Engine) -> int:
    """The stored schema version, writing :data:`SCHEMA_VERSION` when there is none."""
    query = select(meta.c.value).where(meta.c.key == SCHEMA_VERSION_KEY)
    for _attempt in range(2):
        try:
            with engine.begin() as conn:
                value = conn.execute(query).scalar_one_or_none()
                if value is None:
                    conn.execute(
                        meta.insert().values(key=SCHEMA_VERSION_KEY, value=str(SCHEMA_VERSION))
                    )
                    return SCHEMA_VERSION
        except exc.IntegrityError:
            continue  # another process wrote it first (rolled back): read theirs
        return _parse_version(value)
    raise StoreUnavailableError(
        "schema version vanished while being written", operation="create_schema"
    )
