"""The store's SQL, built once per dialect with SQLAlchemy Core and compiled once.

Every statement the store runs is a :class:`Prepared`: the Core statement (run through
``Connection.execute`` on the generic path) plus its text compiled for the engine's
dialect and a function turning named parameters into the driver's (a tuple in
``positiontup`` order for ``qmark``/``format``/``numeric`` drivers, a dict for named
ones).  The store executes the compiled text straight on the pooled DBAPI cursor, so a
statement costs the driver's time, not SQLAlchemy's per-execution compilation and
parameter processing (several times the statement itself on SQLite).

``IN`` lists are rendered per size, padded to the next power of two by repeating the last
value (duplicates in ``IN`` change nothing), so a few compiled shapes serve every call.
Loading keys of several kinds is one ``SELECT`` with an ``OR`` of ``(kind = ? AND key IN
(...))`` groups, which every dialect indexes on the primary key.

PostgreSQL adds three statements: the placeholder insert and delete that hold absent
keys (:mod:`.apply`) and ``SELECT pg_notify(...)`` to wake listening workers
(:mod:`.listen`); and, through psycopg, the whole common commit and the lease as one
statement each (:mod:`.postgres`; commits rendered once per ``SingleShape``).
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Insert,
    Integer,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.engine import Dialect

from stepkernel.adapters.sql.postgres import SingleShape, lease_sql, single_commit_sql
from stepkernel.adapters.sql.schema import NOTIFY_CHANNEL, messages, records
from stepkernel.domain.records import ACTION, RecordKey
from stepkernel.ports.store import ActionQuery

__all__ = [
    "CHUNK",
    "KeyGroups",
    "Prepared",
    "Statements",
    "actions_query",
    "chunks",
    "group_keys",
    "insert_if_absent",
]

CHUNK = 256
"""Most values bound into one statement's ``IN`` lists (padded: at most twice that)."""

_SHAPES_KEPT = 512
"""Compiled ``IN`` shapes remembered per store before the cache starts over."""

Params = Mapping[str, Any]

Statement = Select[Any] | Insert | Update | Delete
"""The statements the store prepares (all executable and compilable)."""


class Prepared:
    """One statement compiled for one dialect.

    ``statement`` is the Core statement, ``sql`` the driver's text; :meth:`params` turns
    named parameters into the driver's, adding the statement's constant binds and
    applying any bind processors the dialect has for the bound types.  ``direct`` is
    ``False`` when the compiled text cannot be run on a cursor as is (expanding or
    literal-execute parameters, escaped bind names, an unknown paramstyle): the store
    then runs every statement through ``Connection.execute``.
    """

    __slots__ = ("direct", "params", "sql", "statement")

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled: Any = statement.compile(dialect=dialect)
        self.statement = statement
        self.sql: str = compiled.string
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names: list[str] = (
            list(compiled.positiontup or ()) if compiled.positional else list(by_name)
        )
        self.direct = bool(
            not compiled.escaped_bind_names
            and not compiled.post_compile_params
            and not compiled.literal_execute_params
            and (not compiled.positional or compiled.positiontup is not None)
            and dialect.paramstyle in ("qmark", "format", "numeric", "named", "pyformat")
        )
        constants = {name: b.effective_value for name, b in by_name.items() if not b.required}
        processors: dict[str, Callable[[Any], Any]] = {}
        for name in names:
            processor = by_name[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        self.params = _param_builder(names, compiled.positional, constants, processors)


def _param_builder(
    names: list[str],
    positional: bool,
    constants: dict[str, Any],
    processors: dict[str, Callable[[Any], Any]],
) -> Callable[[Params], Any]:
    """The fastest function building a statement's driver parameters."""
    if positional:
        if not names:
            return lambda _row: ()
        pick: Callable[[Params], Any]
        if len(names) == 1:
            single = operator.itemgetter(names[0])

            def pick(row: Params) -> Any:
                return (single(row),)
        else:
            pick = operator.itemgetter(*names)
    else:
        wanted = tuple(dict.fromkeys(names))

        def pick(row: Params) -> Any:
            return {name: row[name] for name in wanted}

    if not constants and not processors:
        return pick
    if positional and not constants:
        at = [(i, processors[name]) for i, name in enumerate(names) if name in processors]

        def process(row: Params) -> Any:
            values = list(pick(row))
            for i, processor in at:
                values[i] = processor(values[i])
            return tuple(values)

        return process

    def build(row: Params) -> Any:
        full = {**constants, **row} if constants else dict(row)
        for name, processor in processors.items():
            full[name] = processor(full[name])
        return pick(full)

    return build


def _padded(size: int) -> int:
    padded = 1
    while padded < size:
        padded *= 2
    return padded


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """*items* in slices of at most *size*."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


KeyGroups = list[tuple[str, list[str]]]
"""Record keys grouped by kind: ``[(kind, [key, ...]), ...]``, kinds sorted."""


def group_keys(keys: Iterable[RecordKey]) -> KeyGroups:
    """*keys* (distinct) grouped by kind, kinds in sorted order."""
    by_kind: dict[str, list[str]] = {}
    for kind, key in keys:
        by_kind.setdefault(kind, []).append(key)
    return sorted(by_kind.items())


class Statements:
    """Every statement of the store, prepared for one dialect (see module)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._shapes: dict[tuple[Any, ...], Prepared] = {}
        self._shapes_lock = threading.Lock()
        r, m = records, messages
        self.insert_record, self.native_upsert = insert_if_absent(dialect, r, ("kind", "key"))
        self.insert_message, _ = insert_if_absent(dialect, m, ("id",))
        prepare = self._prepare
        self.insert_plain = prepare(r.insert().values(_binds(r)))
        self.insert_record = prepare(self.insert_record.values(_binds(r)))
        self.insert_message = prepare(self.insert_message.values(_binds(m)))
        # The identity columns of an action never change after it is created, so the
        # update leaves their index entries alone and only *checks* them: a write that
        # did change one matches no row and takes the slow path, which rewrites the row.
        self.update = prepare(
            r.update()
            .where(
                r.c.kind == bindparam("b_kind"),
                r.c.key == bindparam("b_key"),
                r.c.version == bindparam("b_prev"),
                r.c.root_id.is_not_distinct_from(bindparam("b_root_id")),
                r.c.actor_type.is_not_distinct_from(bindparam("b_actor_type")),
                r.c.actor_key.is_not_distinct_from(bindparam("b_actor_key")),
                r.c.name.is_not_distinct_from(bindparam("b_name")),
                r.c.created_at.is_not_distinct_from(bindparam("b_created_at")),
            )
            .values(
                version=bindparam("u_version"),
                data=bindparam("u_data"),
                status=bindparam("u_status"),
                callbacks=bindparam("u_callbacks"),
            )
        )
        self.delete = prepare(
            r.delete().where(
                r.c.kind == bindparam("b_kind"),
                r.c.key == bindparam("b_key"),
                r.c.version == bindparam("b_prev"),
            )
        )
        self.delete_any = prepare(
            r.delete().where(r.c.kind == bindparam("b_kind"), r.c.key == bindparam("b_key"))
        )
        self.ack = prepare(m.delete().where(m.c.id == bindparam("b_id")))
        self.due = prepare(
            select(m.c.id, m.c.data, m.c.deliveries)
            .where(m.c.due <= bindparam("now"))
            .order_by(m.c.due, m.c.id)
            .limit(bindparam("lim", type_=Integer))
            .with_for_update(skip_locked=True)
        )
        self.grant = prepare(
            m.update()
            .where(m.c.id == bindparam("b_id"))
            .values(
                owner=bindparam("u_owner"),
                lease_until=bindparam("u_until"),
                due=bindparam("u_until"),
                deliveries=m.c.deliveries + 1,
            )
        )
        self.release = prepare(
            m.update()
            .where(m.c.id == bindparam("b_id"), m.c.owner == bindparam("b_owner"))
            .values(owner=None, lease_until=0.0, due=m.c.available_at)
        )
        self.extend = prepare(
            m.update()
            .where(m.c.id == bindparam("b_id"), m.c.owner == bindparam("b_owner"))
            .values(lease_until=bindparam("u_until"), due=bindparam("u_until"))
        )
        self.next_due = prepare(select(func.min(m.c.due)))
        queued = select(m.c.id, m.c.data).order_by(m.c.available_at, m.c.id)
        self.queued = prepare(queued)
        self.queued_action = prepare(queued.where(m.c.action_id == bindparam("action")))
        postgres = dialect.name == "postgresql"
        self.placeholders = postgres
        """Whether commits hold absent keys with placeholder rows (see :mod:`.apply`)."""
        key = (r.c.kind == bindparam("b_kind"), r.c.key == bindparam("b_key"))
        self.hold_absent = prepare(
            insert_if_absent(dialect, r, ("kind", "key"))[0].values(
                kind=bindparam("b_kind"), key=bindparam("b_key"), version=0, data=""
            )
        )
        self.drop_absent = prepare(r.delete().where(*key, r.c.version == 0))
        self.single = postgres and dialect.paramstyle in ("format", "pyformat")
        """Whether a common commit can run as one statement (see
        :func:`single_commit_sql`): PostgreSQL through a ``%s`` driver (psycopg)."""
        self._single_sql: dict[SingleShape, str] = {}
        self.lease_one: str | None = lease_sql(dialect) if self.single else None
        """Where :attr:`single`: the one-statement lease (:func:`.postgres.lease_sql`)."""
        self.notify: Prepared | None = (
            prepare(select(func.pg_notify(literal(NOTIFY_CHANNEL), literal(""))))
            if postgres
            else None
        )
        """``NOTIFY`` of the work channel, where the database has it (PostgreSQL)."""
        self.direct = all(
            p.direct
            for p in (
                self.hold_absent,
                self.drop_absent,
                *((self.notify,) if self.notify is not None else ()),
                self.insert_plain,
                self.insert_record,
                self.insert_message,
                self.update,
                self.delete,
                self.delete_any,
                self.ack,
                self.due,
                self.grant,
                self.release,
                self.extend,
                self.next_due,
                self.queued,
                self.queued_action,
                self.load(group_keys([("k", "k")]))[0],
            )
        )
        """Whether every statement runs straight on the DBAPI cursor (see Prepared)."""

    def _prepare(self, statement: Statement) -> Prepared:
        return Prepared(statement, self._dialect)

    def _shape(self, shape: tuple[Any, ...], build: Callable[[], Statement]) -> Prepared:
        prepared = self._shapes.get(shape)
        if prepared is None:
            prepared = Prepared(build(), self._dialect)
            with self._shapes_lock:
                if len(self._shapes) >= _SHAPES_KEPT:
                    self._shapes.clear()
                self._shapes[shape] = prepared
        return prepared

    def single_commit(self, shape: SingleShape) -> str:
        """The text of :func:`single_commit_sql` for *shape*, rendered once."""
        text = self._single_sql.get(shape)
        if text is None:
            text = single_commit_sql(self._dialect, shape)
            with self._shapes_lock:
                if len(self._single_sql) >= _SHAPES_KEPT:
                    self._single_sql.clear()
                self._single_sql[shape] = text
        return text

    # -- statements rendered per IN-list shape -----------------------------------------

    def load(self, groups: KeyGroups) -> tuple[Prepared, dict[str, Any]]:
        """``SELECT kind, key, version, data`` of the records in *groups* (at most
        :data:`CHUNK` keys), and its parameters."""
        return self._records_by_key("load", groups, lock=False)

    def lock_versions(self, groups: KeyGroups) -> tuple[Prepared, dict[str, Any]]:
        """``SELECT kind, key, version ... FOR UPDATE`` of the records in *groups*.

        Exclusive (``FOR UPDATE``, not ``FOR SHARE``): a guarded record is often written
        in the same transaction, and share-then-upgrade deadlocks under load."""
        return self._records_by_key("lock", groups, lock=True)

    def _records_by_key(
        self, name: str, groups: KeyGroups, *, lock: bool
    ) -> tuple[Prepared, dict[str, Any]]:
        params: dict[str, Any] = {}
        sizes: list[int] = []
        for g, (kind, keys) in enumerate(groups):
            size = _padded(len(keys))
            sizes.append(size)
            params[f"g{g}"] = kind
            last = keys[-1]
            for i in range(size):
                params[f"g{g}_{i}"] = keys[i] if i < len(keys) else last

        def build() -> Statement:
            r = records
            conditions: list[ColumnElement[bool]] = [
                and_(
                    r.c.kind == bindparam(f"g{g}"),
                    r.c.key.in_([bindparam(f"g{g}_{i}") for i in range(size)]),
                )
                for g, size in enumerate(sizes)
            ]
            columns = (r.c.kind, r.c.key, r.c.version) + (() if lock else (r.c.data,))
            stmt = select(*columns).where(or_(*conditions))
            # Locked in key order (the sort runs below the row locking): concurrent
            # commits locking overlapping keys then queue instead of deadlocking.
            return stmt.order_by(r.c.kind, r.c.key).with_for_update() if lock else stmt

        return self._shape((name, *sizes), build), params

    def messages_by_id(self, ids: Sequence[str], *, lease: bool) -> tuple[Prepared, dict[str, Any]]:
        """The messages *ids* (at most :data:`CHUNK`): with *lease*, ``id, data,
        deliveries, available_at, owner, lease_until`` locked ``FOR UPDATE SKIP
        LOCKED``; without, just ``id`` (to skip ids already queued)."""
        size = _padded(len(ids))
        params = {f"i{i}": ids[i] if i < len(ids) else ids[-1] for i in range(size)}

        def build() -> Statement:
            m = messages
            where = m.c.id.in_([bindparam(f"i{i}") for i in range(size)])
            if not lease:
                return select(m.c.id).where(where)
            return (
                select(
                    m.c.id, m.c.data, m.c.deliveries, m.c.available_at, m.c.owner, m.c.lease_until
                )
                .where(where)
                .with_for_update(skip_locked=True)
            )

        return self._shape(("lease" if lease else "ids", size), build), params


def _binds(table: Table) -> dict[str, Any]:
    return {column.name: bindparam(column.name) for column in table.c}


def insert_if_absent(
    dialect: Dialect, table: Table, index_elements: tuple[str, ...]
) -> tuple[Any, bool]:
    """An insert that skips rows whose primary key exists, and whether it is native
    (affected-row counts then tell inserted from skipped rows)."""
    name = dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=index_elements), True
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=index_elements), True
    if name in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE"), True
    return table.insert(), False


def status_counts() -> Select[Any]:
    """``SELECT status, count(*)`` of the actions, per status (the status index alone)."""
    r = records
    return (
        select(r.c.status, func.count())
        .where(r.c.kind == ACTION, r.c.status.is_not(None))
        .group_by(r.c.status)
    )


def actions_query(query: ActionQuery) -> Select[Any]:
    """``SELECT key, version, data`` of the actions matching *query* through the indexed
    columns, ordered by ``created_at`` then key (built per call: filters vary)."""
    r = records
    stmt = select(r.c.key, r.c.version, r.c.data).where(r.c.kind == ACTION)
    if query.root_id is not None:
        stmt = stmt.where(r.c.root_id == query.root_id)
    if query.statuses is not None:
        stmt = stmt.where(r.c.status.in_(sorted(s.value for s in query.statuses)))
    if query.actor_type is not None:
        stmt = stmt.where(r.c.actor_type == query.actor_type)
    if query.actor_key is not None:
        stmt = stmt.where(r.c.actor_key == query.actor_key)
    if query.name is not None:
        stmt = stmt.where(r.c.name == query.name)
    if query.created_before is not None:
        stmt = stmt.where(r.c.created_at < query.created_before)
    if query.callbacks is not None:  # NULL: written by schema version 1, filtered decoded
        stmt = stmt.where(or_(r.c.callbacks == query.callbacks, r.c.callbacks.is_(None)))
    stmt = stmt.order_by(r.c.created_at, r.c.key)
    if query.limit is not None and query.callbacks is None:  # else: limited once filtered
        stmt = stmt.limit(max(query.limit, 0))
    return stmt
