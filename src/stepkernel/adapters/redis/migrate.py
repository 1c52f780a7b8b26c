"""Bringing data an older stepkernel wrote up to what this one indexes (Redis).

Redis has no schema version; the store keeps ``{p}:x:version`` instead, and the first
store of this version that binds to a prefix completes what older versions did not
index.  So far one step: ``{p}:x:after``, the sparse index of actions whose after
callbacks are ``pending`` (what the recovery sweep asks for), which older stores did not
keep.
"""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from stepkernel.adapters.redis.errors import unavailable
from stepkernel.adapters.redis.keys import Keyspace
from stepkernel.domain.records import ActionRecord
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.store import ActionQuery

__all__ = ["INDEX_VERSION", "index_callbacks"]

INDEX_VERSION = "2"
"""What ``{p}:x:version`` holds once every index of this version covers every action."""


def index_callbacks(
    client: Redis | RedisCluster, space: Keyspace, find: Callable[[ActionQuery], list[ActionRecord]]
) -> int:
    """Put the finished actions owing callbacks into ``x:after`` unless ``x:version``
    says it was done, then record it; returns the round trips taken.  Idempotent; a
    member added from a read that went stale meanwhile is harmless (``find_actions``
    filters every record it fetches, and the commit script removes it on the action's
    next write)."""
    try:
        done = client.get(space.index_version)
    except RedisError as error:
        raise unavailable("bind", error) from error
    if done is not None:
        return 1
    finished = frozenset(status for status in ActionStatus if status.terminal)
    owing = {
        r.id: float(r.created_at)
        for r in find(ActionQuery(statuses=finished))
        if r.callbacks == "pending"
    }
    try:
        if owing:
            client.zadd(space.index_after, owing)
        client.set(space.index_version, INDEX_VERSION)
    except RedisError as error:
        raise unavailable("bind", error) from error
    return 3 if owing else 2
