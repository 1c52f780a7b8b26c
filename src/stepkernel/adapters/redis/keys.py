"""Where the Redis store keeps things: every key name, built from one prefix.

All keys start with ``{<prefix>}:``.  The braces are a Redis Cluster *hash tag*: every
key of one store hashes to the same slot, so the Lua scripts (which touch records of
several trees, lanes and achievements in one commit) and ``MGET`` stay single-slot
operations on Cluster too.  The price is that one store lives on one shard; see
``docs/redis.md``.

=====================================  ==================  ================================
key                                    type                holds
=====================================  ==================  ================================
``{p}:epoch``                          string              the store's epoch marker
``{p}:r:<kind>:<id>``                  string              ``<version>|<encode_record text>``
``{p}:due``                            sorted set          message id -> due time
``{p}:m:<message id>``                 hash                ``d`` message text, ``at``
                                                           available_at, ``a`` action id,
                                                           ``n`` deliveries, ``o`` owner
``{p}:qa:<action id>``                 set                 queued message ids per action
``{p}:x:meta``                         hash                action id -> its index entry
``{p}:x:after``                        sorted set          actions owing after callbacks
                                                           (callbacks ``pending``) ->
                                                           created_at
``{p}:x:version``                      string              ``2`` once ``x:after`` covers
                                                           every action (see the store)
``{p}:dead``                           hash                message id -> dead letter JSON
                                                           (see :mod:`.dead`)
``{p}:x:all``                          sorted set          every action id -> created_at
``{p}:x:<field>:<value>``              sorted set          action ids with that value
                                                           (field: root, status, type,
                                                           key, name) -> created_at
=====================================  ==================  ================================

A message's *due* time is its ``available_at`` while unleased and its lease expiry while
leased, so "leasable" is exactly "due <= now", as in the reference adapter.
"""

from __future__ import annotations

from stepkernel.domain.errors import InvalidInputError
from stepkernel.domain.records import RecordKey

__all__ = ["INDEX_FIELDS", "Keyspace"]

INDEX_FIELDS = ("status", "root", "type", "key", "name")
"""The action fields with a secondary index, in the order of an index entry (after
``created_at``); the commit script uses the same order."""


class Keyspace:
    """Key names for one store prefix (validated: non-empty, no braces)."""

    __slots__ = (
        "base",
        "due",
        "epoch",
        "index_after",
        "index_all",
        "index_meta",
        "index_version",
        "prefix",
    )

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if not prefix or "{" in prefix or "}" in prefix:
            raise InvalidInputError(
                f"prefix must be a non-empty string without braces, got {prefix!r}",
                prefix=prefix,
            )
        self.prefix = prefix
        self.base = f"{{{prefix}}}:"
        self.epoch = self.base + "epoch"
        self.due = self.base + "due"
        self.index_meta = self.base + "x:meta"
        self.index_all = self.base + "x:all"
        self.index_after = self.base + "x:after"
        self.index_version = self.base + "x:version"

    def record(self, key: RecordKey) -> str:
        """The key holding record *key* (``(kind, id)``)."""
        return f"{self.base}r:{key[0]}:{key[1]}"

    def message(self, message_id: str) -> str:
        """The hash holding queued message *message_id*."""
        return f"{self.base}m:{message_id}"

    def index(self, field: str, value: str) -> str:
        """The sorted set of action ids whose *field* equals *value*."""
        return f"{self.base}x:{field}:{value}"

    def pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every key of this store (for tools and tests)."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.base)
        return escaped + "*"
