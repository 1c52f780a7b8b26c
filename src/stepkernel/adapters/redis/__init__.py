"""The Redis adapter (redis-py): records, queue and indexes in one Redis, one Lua script
per transition.  Needs the ``redis`` extra (``pip install stepkernel[redis]``); see
``docs/redis.md`` for persistence, the epoch marker and Cluster.
"""

from stepkernel.adapters.redis.errors import RedisDataLostError
from stepkernel.adapters.redis.store import DEFAULT_PREFIX, RedisWorkflowStore

__all__ = ["DEFAULT_PREFIX", "RedisDataLostError", "RedisWorkflowStore"]
