"""The Redis store: records, the leased queue and the action indexes in one Redis.

Every state change is one Lua script run with ``EVALSHA`` (:mod:`.scripts`), so a
commit's version checks, record writes and deletes, index updates, acknowledgements and
enqueued messages apply atomically -- Redis runs a script to the end before any other
command -- or, when a version moved, not at all.  Reads are one ``MGET`` (records) or one
script.  Keys are laid out in :mod:`.keys`; stored values are built in :mod:`.plan`.

**Epoch marker.**  On first use the store binds to the marker at ``{prefix}:epoch``
(creating it with ``create=True``); every script and every ``MGET`` checks it first.
When Redis restarts empty (no persistence, or lost files) or is flushed, the marker is
gone or replaced and every operation raises :class:`RedisDataLostError` instead of
carrying on with an empty store.  See ``docs/redis.md`` for persistence settings.

**Time** is the store's :class:`~stepkernel.ports.clock.Clock`, passed into the scripts
as arguments; Redis ``TIME`` is never used, so a fake clock drives leases and delays.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Collection, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError, ResponseError

from stepkernel.adapters.decoded import DecodedRecords
from stepkernel.adapters.queue_text import decodable, message_or_reason
from stepkernel.adapters.redis import dead
from stepkernel.adapters.redis.errors import (
    EPOCH_ERROR,
    RedisDataLostError,
    data_lost,
    found_marker,
    unavailable,
)
from stepkernel.adapters.redis.keys import Keyspace
from stepkernel.adapters.redis.migrate import index_callbacks
from stepkernel.adapters.redis.plan import CommitArgs, split_value
from stepkernel.adapters.redis.scripts import (
    ACK,
    COMMIT,
    COUNT,
    EXTEND,
    FIND,
    INIT,
    LEASE,
    NEXT_DUE,
    QUEUED,
    RELEASE,
    Script,
    reply_text,
)
from stepkernel.adapters.redis.server import log, server_warnings
from stepkernel.domain.encoding import decode_record
from stepkernel.domain.errors import InvalidInputError, StoreUnavailableError
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ACTION, ActionRecord, Record, RecordKey
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock, SystemClock
from stepkernel.ports.store import ActionQuery, Commit, DeadLetter, Delivery, WorkflowStore

__all__ = ["DEFAULT_PREFIX", "RedisDataLostError", "RedisWorkflowStore"]

DEFAULT_PREFIX = "stepkernel"

_CHUNK = 512
"""Record keys fetched per ``MGET`` by :meth:`RedisWorkflowStore.find_actions`."""


Client = redis.Redis | RedisCluster


_text = reply_text


class RedisWorkflowStore(WorkflowStore):
    """A :class:`WorkflowStore` in Redis (>= 6.2), through redis-py.

    *client_or_url* is a configured ``redis.Redis`` (or ``redis.cluster.RedisCluster``)
    client, which stays the caller's (:meth:`close` does not close it), or a URL
    (any redis-py URL: ``redis://host:6379/0``, ``rediss://...``, ``unix://...``; an
    optional ``?prefix=name`` query sets the prefix), for which the store opens and owns
    a client.
    Every key starts with ``{prefix}:`` (a Cluster hash tag: all of a store's keys share
    one slot).  With ``create=False`` the store refuses to start on a Redis that holds
    no epoch marker for the prefix (see module) instead of creating one.

    Round trips: :meth:`commit` is one ``EVALSHA`` (none for an empty commit without
    guards); :meth:`lease`, :meth:`ack`, :meth:`release`, :meth:`extend`,
    :meth:`next_due` and :meth:`queued` are one ``EVALSHA`` each; :meth:`load` one
    ``MGET``; :meth:`find_actions` one ``EVALSHA`` for the matching ids plus one ``MGET``
    per 512 records.  A script Redis does not know yet (first use, after a restart or
    ``SCRIPT FLUSH``) costs two more once: the ``NOSCRIPT`` answer, then ``SCRIPT LOAD``.
    The first operation of a store also runs the epoch script and ``INFO`` once (it logs
    a warning when the server may evict or lose data, see :mod:`.server`).
    ``round_trips`` counts them all, ``commits`` counts successful :meth:`commit` calls.

    Driver errors become :class:`StoreUnavailableError`; a lost epoch marker
    :class:`RedisDataLostError`.  A stored record that does not decode raises
    :class:`CorruptRecordError` with its ``key``, ``reason`` and stored ``version``.
    """

    def __init__(
        self,
        client_or_url: Client | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be a stepkernel Clock, not {type(clock).__name__}")
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, not {type(create).__name__}")
        if isinstance(client_or_url, str):
            url, url_prefix = _split_url(client_or_url)
            if url_prefix is not None:
                if prefix not in (DEFAULT_PREFIX, url_prefix):
                    raise InvalidInputError(
                        f"prefix {prefix!r} contradicts the URL's prefix {url_prefix!r}",
                        prefix=prefix,
                    )
                prefix = url_prefix
            self._space = Keyspace(prefix)
            try:
                client: Client = redis.Redis.from_url(url)
            except (ValueError, RedisError) as error:
                raise InvalidInputError(f"bad Redis URL {url!r}: {error}", url=url) from error
            self._owned = True
        elif isinstance(client_or_url, redis.Redis | RedisCluster):
            self._space = Keyspace(prefix)
            client = client_or_url
            self._owned = False
        else:
            raise TypeError(
                "client_or_url must be a redis.Redis, a redis.cluster.RedisCluster or a "
                f"URL, not {type(client_or_url).__name__}"
            )
        self.clock = clock if clock is not None else SystemClock()
        self.commits = 0
        self.round_trips = 0
        self._client = client
        self._create = create
        self._token: str | None = None
        self._bind_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._closed = False
        # (kind, key) -> (stored value, record): a load that reads back exactly the value
        # remembered reuses the (immutable) record instead of decoding and verifying it
        # again.  Any other value, e.g. tampered bytes, is decoded and checked as usual.
        self._decoded = DecodedRecords()

    # -- properties for tools and tests ---------------------------------------------------

    @property
    def client(self) -> Client:
        """The redis-py client the store talks through."""
        return self._client

    @property
    def keys(self) -> Keyspace:
        """The store's key names (for backdoor tests and tools)."""
        return self._space

    @property
    def epoch(self) -> str:
        """The epoch marker this store is bound to (binding on first use)."""
        return self._bound()

    # -- plumbing -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the store is closed", operation="closed")

    def _count(self, trips: int, *, commit: bool = False) -> None:
        with self._count_lock:
            self.round_trips += trips
            if commit:
                self.commits += 1

    def _bound(self) -> str:
        """The marker the store is bound to; binds (one script run) on first use."""
        token = self._token
        if token is not None:
            return token
        with self._bind_lock:
            if self._token is None:
                found = self._eval(
                    "bind",
                    INIT,
                    [self._space.epoch],
                    ["1" if self._create else "0", uuid.uuid4().hex],
                )
                if found is None:
                    raise data_lost(self._space.prefix, None, None)
                self._token = _text(found)
                self._check_server()
                self._index_callbacks()
            return self._token

    def _index_callbacks(self) -> None:
        """Once per prefix, complete the callbacks index (see :mod:`.migrate`); a failure
        is logged, not raised (the next store to bind tries again)."""
        try:
            self._count(index_callbacks(self._client, self._space))
        except StoreUnavailableError as error:
            log.warning("prefix %r: indexing callbacks failed: %s", self._space.prefix, error)

    def _check_server(self) -> None:
        """Warn (once per store) about server settings that lose data; best effort."""
        client = self._client
        if not isinstance(client, redis.Redis):
            return  # a cluster answers per node; see docs/redis.md
        try:
            info: Any = client.info()
        except RedisError:
            return  # INFO may be disabled or renamed on managed services
        self._count(1)
        if isinstance(info, dict):
            for warning in server_warnings(info):
                log.warning("prefix %r: %s (see docs/redis.md)", self._space.prefix, warning)

    def _eval(
        self, operation: str, script: Script, keys: list[str], args: Sequence[str | bytes]
    ) -> Any:
        """Run *script* with ``EVALSHA`` (loading it on ``NOSCRIPT``); translate errors."""
        self._check_open()
        client = self._client
        trips = 1
        try:
            try:
                result = client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                trips = 3
                client.script_load(script.text)
                result = client.evalsha(script.sha, len(keys), *keys, *args)
        except ResponseError as error:
            message = str(error)
            if message.startswith(EPOCH_ERROR):
                self._count(trips)
                raise data_lost(self._space.prefix, self._token, found_marker(message)) from None
            raise unavailable(operation, error) from error
        except RedisError as error:
            raise unavailable(operation, error) from error
        self._count(trips)
        return result

    def _run(self, operation: str, script: Script, args: Sequence[str | bytes]) -> Any:
        """Run a script taking the standard keys (marker, due set) and arguments."""
        space = self._space
        return self._eval(
            operation, script, [space.epoch, space.due], [self._bound(), space.base, *args]
        )

    def _mget(self, operation: str, names: list[str]) -> list[Any]:
        """``MGET`` of *names*, the marker checked in the same command."""
        token = self._bound()
        try:
            values: Any = self._client.mget([self._space.epoch, *names])
        except RedisError as error:
            raise unavailable(operation, error) from error
        self._count(1)
        found = values[0]
        if found is None or _text(found) != token:
            raise data_lost(self._space.prefix, token, None if found is None else _text(found))
        return list(values[1:])

    # -- records -------------------------------------------------------------------------

    def load(self, keys: Collection[RecordKey]) -> dict[RecordKey, Record | None]:
        """Every key's record or ``None``: one ``MGET``."""
        self._check_open()
        found: dict[RecordKey, Record | None] = dict.fromkeys(keys)
        if not found:
            return found
        wanted = list(found)
        record_key = self._space.record
        values = self._mget("load", [record_key(key) for key in wanted])
        for key, value in zip(wanted, values, strict=True):
            if value is not None:
                found[key] = self._decode(key, _text(value))
        return found

    def _decode(self, key: RecordKey, value: str) -> Record:
        record = self._decoded.get(key, value)
        if record is None:
            version, text = split_value(value)
            record = decode_record(key, text, version=version)
            self._decoded.remember(key, value, record)
        return record

    def commit(self, commit: Commit) -> None:
        """Apply *commit* atomically (one script) or raise :class:`ConflictError`."""
        self._check_open()
        if commit.empty and not commit.guards:
            self._count(0, commit=True)
            return
        plan = CommitArgs(self._space, commit, self._bound())
        result = self._eval("commit", COMMIT, plan.keys, plan.args)
        if result != 0:
            position, actual = result
            raise plan.conflict(int(position), int(actual))
        for key, value, record in plan.stored:
            self._decoded.remember(key, value, record)
        self._count(0, commit=True)

    # -- queue ---------------------------------------------------------------------------

    def lease(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        ids: Sequence[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to *limit* due messages, earliest due first (or in *ids* order).

        A leased message that does not decode is moved to the dead letters (see
        :mod:`.dead`) and the rest of the batch is handed out."""
        self._check_open()
        if lease_seconds <= 0:
            raise InvalidInputError(
                f"lease_seconds must be > 0, got {lease_seconds!r}", lease_seconds=lease_seconds
            )
        if limit <= 0:
            return []
        now = float(self.clock.now())
        until = now + lease_seconds
        head = [repr(now), repr(until), worker, str(limit)]
        if ids is None:
            reply = self._run("lease", LEASE, [*head, "due"])
        else:
            wanted = list(dict.fromkeys(ids))
            if not wanted:
                return []
            reply = self._run("lease", LEASE, [*head, "ids", *wanted])
        out: list[Delivery] = []
        undecodable: list[str | bytes] = []
        for i in range(0, len(reply), 3):
            message_id = _text(reply[i])
            found = message_or_reason(message_id, _text(reply[i + 1]))
            if isinstance(found, str):
                # The raw reply: text decoded with replacements would never match.
                undecodable += [message_id, found, reply[i + 1]]
            else:
                out.append(Delivery(message=found, deliveries=int(reply[i + 2]), lease_until=until))
        if undecodable:
            try:
                self._run("lease", dead.MOVE, [repr(now), *undecodable])
            except StoreUnavailableError as error:  # the next lease moves them
                log.warning("moving undecodable messages failed (moved later): %s", error)
                return out
            for moved in undecodable[::3]:
                log.error("message %s does not decode: moved to the dead letters", moved)
        return out

    def ack(self, ids: Iterable[str]) -> None:
        """Remove the messages *ids*; unknown ids are ignored."""
        self._check_open()
        wanted = list(dict.fromkeys(ids))
        if wanted:
            self._run("ack", ACK, wanted)

    def release(self, ids: Iterable[str], *, worker: str) -> None:
        """Clear *worker*'s leases on *ids*: due again at their ``available_at``."""
        self._check_open()
        wanted = list(dict.fromkeys(ids))
        if wanted:
            self._run("release", RELEASE, [worker, *wanted])

    def extend(self, ids: Iterable[str], *, worker: str, lease_seconds: float) -> None:
        """Move *worker*'s leases on *ids* to ``now + lease_seconds``."""
        self._check_open()
        wanted = list(dict.fromkeys(ids))
        if wanted:
            until = float(self.clock.now()) + lease_seconds
            self._run("extend", EXTEND, [worker, repr(until), *wanted])

    def next_due(self) -> float | None:
        """The smallest due time in the queue, ``None`` when it is empty."""
        self._check_open()
        value = self._run("next_due", NEXT_DUE, [])
        return None if value is None else float(_text(value))

    def queued(self, *, action_id: str | None = None) -> list[Message]:
        """Queued messages (leased or not), ordered by ``available_at`` then id."""
        self._check_open()
        if action_id is None:
            reply = self._run("queued", QUEUED, ["all", ""])
        else:
            reply = self._run("queued", QUEUED, ["action", action_id])
        messages = decodable(
            (_text(reply[i]), _text(reply[i + 1])) for i in range(0, len(reply), 2)
        )
        messages.sort(key=lambda m: (m.available_at, m.id))
        return messages

    def count_actions(self) -> dict[ActionStatus, int]:
        """Actions per status: the sizes of the status indexes, nothing read."""
        self._check_open()
        statuses = list(ActionStatus)
        keys = [self._space.index("status", status.value) for status in statuses]
        sizes = self._run("count_actions", COUNT, keys)
        return {status: int(n) for status, n in zip(statuses, sizes, strict=True) if int(n)}

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter (see :mod:`.dead`), oldest first, then by id."""
        self._check_open()
        return dead.parse(self._run("dead_letters", dead.LIST, []))

    def drop_dead_letters(self, ids: Iterable[str]) -> int:
        """Forget the dead letters *ids*; how many there were."""
        self._check_open()
        wanted = list(dict.fromkeys(ids))
        return int(self._run("drop_dead_letters", dead.DROP, wanted)) if wanted else 0

    # -- queries -------------------------------------------------------------------------

    def find_actions(self, query: ActionQuery) -> list[ActionRecord]:
        """Actions matching *query*, by ``created_at`` then id.

        The script intersects the secondary indexes of the fields given (``root_id``,
        ``actor_type``, ``actor_key``, ``name``, and ``callbacks`` when it is
        ``"pending"``), or takes the union of the ``statuses`` indexes when no other
        field is given, or every action; the records are then fetched and filtered on
        every field."""
        self._check_open()
        limit = query.limit
        if (limit is not None and limit <= 0) or query.statuses == frozenset():
            return []
        space = self._space
        conjunct = [
            space.index(field, value)
            for field, value in (
                ("root", query.root_id),
                ("type", query.actor_type),
                ("key", query.actor_key),
                ("name", query.name),
            )
            if value is not None
        ]
        if query.callbacks == "pending":  # other states are not indexed: filtered below
            conjunct.append(space.index_after)
        bound = "+inf" if query.created_before is None else f"({query.created_before!r}"
        if conjunct:
            ids = self._run("find_actions", FIND, ["inter", bound, *conjunct])
        elif query.statuses is not None:
            statuses = sorted(status.value for status in query.statuses)
            keys = [space.index("status", s) for s in statuses]
            ids = self._run("find_actions", FIND, ["union", bound, *keys])
        else:
            ids = self._run("find_actions", FIND, ["all", bound, space.index_all])
        found: list[ActionRecord] = []
        wanted = [_text(i) for i in ids]
        for start in range(0, len(wanted), _CHUNK):
            chunk = [(ACTION, action_id) for action_id in wanted[start : start + _CHUNK]]
            values = self._mget("find_actions", [space.record(key) for key in chunk])
            for key, value in zip(chunk, values, strict=True):
                if value is None:
                    continue  # deleted since the ids were read
                record = self._decode(key, _text(value))
                if isinstance(record, ActionRecord) and query.matches(record):
                    found.append(record)
            if limit is not None and len(found) >= limit:
                break
        found.sort(key=lambda r: (r.created_at, r.id))
        return found if limit is None else found[:limit]

    def close(self) -> None:
        """Make the store unusable; close the client only if the store opened it."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            with contextlib.suppress(RedisError):
                self._client.close()


def _split_url(url: str) -> tuple[str, str | None]:
    """*url* without its ``prefix`` query parameter, and that parameter (if any)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    rest = [(name, value) for name, value in query if name != "prefix"]
    return urlunsplit(parts._replace(query=urlencode(rest))), (prefixes[-1] if prefixes else None)
