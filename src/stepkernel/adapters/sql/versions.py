"""Creating, checking and upgrading the SQL schema (:mod:`.schema`).

:func:`create_schema` (what the store runs by default) creates missing tables, upgrades
an older schema it knows (:data:`UPGRADES`) and records
:data:`~.schema.SCHEMA_VERSION`; :func:`check_schema` only checks, for databases whose
schema is installed by your own migrations (:func:`ddl` renders the statements that
install it on a dialect, :func:`upgrade_ddl` those that bring an older version up).
Both raise :class:`~stepkernel.domain.errors.StoreError` with the fields
``stored_version`` and ``code_version`` when the database holds another version that
they cannot use (or none): a newer stepkernel wrote it, or an older schema awaits your
migration.  The version only moves when the tables do.

An upgrade step only ever adds: tables, nullable columns, indexes.  Each is created
only when missing (so several processes may upgrade at once, and a step interrupted
half-way is finished by the next start), then the stored version moves with a
compare-and-set.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from attrs import frozen
from sqlalchemy import Dialect, Engine, Index, Insert, Table, Update, exc, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from stepkernel.adapters.sql.schema import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    dead_messages,
    meta,
    metadata,
    records,
)
from stepkernel.domain.errors import StoreError, StoreUnavailableError

__all__ = ["UPGRADES", "Upgrade", "check_schema", "create_schema", "ddl", "upgrade_ddl"]


@frozen
class Upgrade:
    """What one version adds over the previous: whole tables, nullable columns of
    existing tables (by table and name, as the new :mod:`.schema` defines them), and
    indexes on existing tables."""

    tables: tuple[Table, ...] = ()
    columns: tuple[tuple[Table, str], ...] = ()
    indexes: tuple[Index, ...] = ()


def _index(table: Table, name: str) -> Index:
    return next(index for index in table.indexes if index.name == name)


UPGRADES: dict[int, Upgrade] = {
    1: Upgrade(
        tables=(dead_messages,),
        columns=((records, "callbacks"),),
        indexes=(_index(records, "ix_sk_records_callbacks"),),
    ),
}
"""For each older schema version this code upgrades, what the next version adds."""


def create_schema(engine: Engine) -> None:
    """Create the ``sk_`` tables if missing, upgrade an older schema listed in
    :data:`UPGRADES`, and record or check the schema version.

    Safe to call from several processes at once and on every start.  Raises
    :class:`StoreError` when the database holds a schema version other than
    :data:`SCHEMA_VERSION` that it cannot upgrade (a newer one was written by a newer
    stepkernel; an unknown or unreadable one), and :class:`StoreUnavailableError` when
    the database fails.
    """
    try:
        # Tables without a version row (an install cut short between the two, or an
        # older release's published DDL whose INSERT failed) are taken for the oldest
        # version: each upgrade step only adds what is missing, so that is always safe.
        existed = inspect(engine).has_table(records.name)
        _create_tables(engine)  # includes the tables every upgrade adds
        stored = _stored_version(engine, default=min(UPGRADES) if existed else SCHEMA_VERSION)
        while stored < SCHEMA_VERSION and stored in UPGRADES:
            _apply(engine, UPGRADES[stored])
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


def ddl(dialect: Dialect | str) -> list[str]:
    """The statements that install this schema on *dialect* (or a dialect name such as
    ``"postgresql"``, ``"mysql"``, ``"sqlite"``): every ``CREATE TABLE`` and ``CREATE
    INDEX``, then the ``INSERT`` recording :data:`SCHEMA_VERSION` (for teams that run
    their own migrations; the store's ``create=True`` does the same)."""
    dialect = _dialect(dialect)
    statements = []
    for table in metadata.sorted_tables:
        statements.extend(_table_ddl(table, dialect))
    insert = meta.insert().values(key=SCHEMA_VERSION_KEY, value=str(SCHEMA_VERSION))
    statements.append(_literal(insert, dialect))
    return statements


def upgrade_ddl(dialect: Dialect | str, from_version: int) -> list[str]:
    """The statements that bring a schema at *from_version* up to
    :data:`SCHEMA_VERSION` on *dialect* (as for :func:`ddl`): per step, its tables,
    ``ALTER TABLE ... ADD COLUMN`` and indexes, then the ``UPDATE`` of
    ``schema_version``; for teams that run their own migrations (``create_schema``
    applies the same).  Raises :class:`StoreError` for a version this code cannot
    upgrade."""
    dialect = _dialect(dialect)
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
        step = UPGRADES[version]
        for table in step.tables:
            statements.extend(_table_ddl(table, dialect))
        statements.extend(_add_column(table, name, dialect) for table, name in step.columns)
        statements.extend(
            _tidy(CreateIndex(index).compile(dialect=dialect)) for index in step.indexes
        )
        statements.append(_literal(_version_update(version), dialect))
    return statements


# -- rendering --------------------------------------------------------------------------


def _dialect(dialect: Dialect | str) -> Dialect:
    return make_url(f"{dialect}://").get_dialect()() if isinstance(dialect, str) else dialect


def _tidy(compiled: object) -> str:
    """Compiled DDL without trailing blanks, indented with spaces."""
    lines = str(compiled).strip().expandtabs(4).splitlines()
    return "\n".join(line.rstrip() for line in lines)


def _table_ddl(table: Table, dialect: Dialect) -> list[str]:
    statements = [_tidy(CreateTable(table).compile(dialect=dialect))]
    statements.extend(
        _tidy(CreateIndex(index).compile(dialect=dialect))
        for index in sorted(table.indexes, key=lambda index: str(index.name))
    )
    return statements


def _add_column(table: Table, name: str, dialect: Dialect) -> str:
    column = _tidy(CreateColumn(table.c[name]).compile(dialect=dialect))
    quoted = dialect.identifier_preparer.format_table(table)
    return f"ALTER TABLE {quoted} ADD COLUMN {column}"


def _literal(statement: Insert | Update, dialect: Dialect) -> str:
    """*statement* with its values inlined, names quoted as *dialect* needs (``key`` is
    reserved on MySQL)."""
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


# -- applying -----------------------------------------------------------------------------


def _create_tables(engine: Engine) -> None:
    try:
        metadata.create_all(engine, checkfirst=True)
    except exc.DBAPIError:
        # Another process created the tables between the check and the CREATE: the
        # second attempt finds them all and creates nothing.
        metadata.create_all(engine, checkfirst=True)


def _apply(engine: Engine, step: Upgrade) -> None:
    """Add *step*'s missing columns and indexes (its tables exist by now), each in a
    transaction of its own; a statement that fails because another process added the
    same thing first is fine once a second look finds it."""
    dialect = engine.dialect

    def has_column(table: Table, name: str) -> bool:
        return name in {column["name"] for column in inspect(engine).get_columns(table.name)}

    def has_index(index: Index) -> bool:
        found = inspect(engine).get_indexes(index.table.name)  # type: ignore[union-attr]
        return index.name in {entry["name"] for entry in found}

    for table, name in step.columns:
        _add_missing(engine, _add_column(table, name, dialect), partial(has_column, table, name))
    for index in step.indexes:
        statement = _tidy(CreateIndex(index).compile(dialect=dialect))
        _add_missing(engine, statement, partial(has_index, index))


def _add_missing(engine: Engine, statement: str, present: Callable[[], bool]) -> None:
    if present():
        return
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    except exc.DBAPIError:
        if not present():
            raise


def _advance_version(engine: Engine, stored: int) -> int:
    """Move the stored version from *stored* to the next (what it adds exists by now);
    whichever process does it first wins, the others read the result."""
    with engine.begin() as conn:
        conn.execute(_version_update(stored))
    return _stored_version(engine)


def _version_update(stored: int) -> Update:
    """Compare-and-set of ``schema_version`` from *stored* to the next version."""
    row = (meta.c.key == SCHEMA_VERSION_KEY) & (meta.c.value == str(stored))
    return meta.update().where(row).values(value=str(stored + 1))


def _stored_version(engine: Engine, default: int = SCHEMA_VERSION) -> int:
    """The stored schema version, writing *default* when there is none."""
    query = select(meta.c.value).where(meta.c.key == SCHEMA_VERSION_KEY)
    for _attempt in range(2):
        try:
            with engine.begin() as conn:
                value = conn.execute(query).scalar_one_or_none()
                if value is None:
                    conn.execute(meta.insert().values(key=SCHEMA_VERSION_KEY, value=str(default)))
                    return default
        except exc.IntegrityError:
            continue  # another process wrote it first (rolled back): read theirs
        return _parse_version(value)
    raise StoreUnavailableError(
        "schema version vanished while being written", operation="create_schema"
    )


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
