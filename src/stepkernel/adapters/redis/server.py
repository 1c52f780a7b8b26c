"""What the Redis store checks about the server it runs on, once, when it binds.

Durability is the server's configuration, not the store's: these checks only *warn*
(logger ``stepkernel.adapters.redis``), because a development Redis without persistence
is a fine place to try things.  See ``docs/redis.md`` for the settings and why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["log", "server_warnings"]

log = logging.getLogger("stepkernel.adapters.redis")


def server_warnings(info: Mapping[str, Any]) -> list[str]:
    """Warnings about a server whose ``INFO`` answer is *info* (missing fields, e.g. on a
    managed service that hides them, give no warning)."""
    warnings: list[str] = []
    policy = info.get("maxmemory_policy")
    if policy is not None and str(policy) != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis may evict "
            "stepkernel records or messages, silently and undetectably; set noeviction"
        )
    aof = info.get("aof_enabled")
    if aof is not None and str(aof) in ("0", "False", "false"):
        warnings.append(
            "Redis runs without an append-only file (appendonly no): a restart loses "
            "every record and message since the last snapshot; stepkernel detects an "
            "empty restart and stops, but cannot bring the data back.  Use appendonly "
            "yes with appendfsync always for no loss"
        )
    return warnings
