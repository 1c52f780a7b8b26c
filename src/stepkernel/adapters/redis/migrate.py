"""Bringing data an older stepkernel wrote up to what this one indexes (Redis).

Redis has no schema version; the store keeps ``{p}:x:version`` instead, and the first
store of this version that binds to a prefix completes what older versions did not
index.  So far one step: ``{p}:x:after``, the sparse index of actions whose after
callbacks are ``pending`` (what the recovery sweep asks for), which older stores did not
keep.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from stepkernel.adapters.redis.errors import unavailable
from stepkernel.adapters.redis.keys import Keyspace
from stepkernel.adapters.redis.plan import split_value
from stepkernel.adapters.redis.scripts import reply_text
from stepkernel.domain.encoding import decode_record
from stepkernel.domain.errors import CorruptRecordError
from stepkernel.domain.records import ACTION, ActionRecord
from stepkernel.domain.status import ActionStatus

__all__ = ["INDEX_VERSION", "index_callbacks"]

log = logging.getLogger(__name__)

INDEX_VERSION = "2"
"""What ``{p}:x:version`` holds once every index of this version covers every action."""

CHUNK = 512
"""Records fetched per ``MGET``."""


def index_callbacks(client: Redis | RedisCluster, space: Keyspace) -> int:
    """Put the finished actions owing callbacks into ``x:after`` unless ``x:version``
    says it was done, then record it; returns the round trips taken.

    Idempotent.  A stored action that does not decode is logged and skipped (the
    runtime fails it when a message reaches it).  A member added from a read that went
    stale meanwhile is harmless: ``find_actions`` filters every record it fetches, and
    the member goes when the action is deleted."""
    trips = 1
    try:
        if client.get(space.index_version) is not None:
            return trips
        ids: list[str] = []
        for status in ActionStatus:
            if status.terminal:
                trips += 1
                found = client.zrange(space.index("status", status.value), 0, -1)
                ids.extend(reply_text(i) for i in found)
        owing: dict[str, float] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            trips += 1
            values = client.mget([space.record((ACTION, i)) for i in chunk])
            for action_id, value in zip(chunk, values, strict=True):
                if value is None:
                    continue  # deleted since
                record = _decoded(action_id, reply_text(value))
                if isinstance(record, ActionRecord) and record.callbacks == "pending":
                    owing[action_id] = float(record.created_at)
        if owing:
            trips += 1
            client.zadd(space.index_after, owing)
        trips += 1
        client.set(space.index_version, INDEX_VERSION)
    except RedisError as error:
        raise unavailable("bind", error) from error
    return trips


def _decoded(action_id: str, value: str) -> object:
    version, text = split_value(value)
    try:
        return decode_record((ACTION, action_id), text, version=version)
    except CorruptRecordError as error:
        log.error("indexing callbacks: skipped action %s: %s", action_id, error)
        return None
