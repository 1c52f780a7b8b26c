"""Redis failures in stepkernel's vocabulary.

Driver exceptions become :class:`~stepkernel.domain.errors.StoreUnavailableError`
(``raise ... from error``); a Redis that lost the store's data -- restarted empty, flushed,
or failed over to a replica that never had it -- becomes :class:`RedisDataLostError`, a
subclass that is *not* retryable: nothing a worker retries will bring the data back.
"""

from __future__ import annotations

from stepkernel.domain.errors import StoreUnavailableError

__all__ = [
    "EPOCH_ERROR",
    "MISSING",
    "RedisDataLostError",
    "data_lost",
    "found_marker",
    "unavailable",
]

EPOCH_ERROR = "STEPKERNEL_EPOCH"
"""First word of the error reply a script sends when the epoch marker is not the one the
store bound to; the rest is the marker found (``missing`` when there is none)."""

MISSING = "missing"


class RedisDataLostError(StoreUnavailableError):
    """The store's epoch marker in Redis is gone or was replaced: Redis lost the data
    this store had seen (an empty restart, ``FLUSHALL``, a failover to an empty replica).

    Nothing was read or written.  Fields: ``prefix``, ``expected`` (the marker this store
    bound to, ``None`` when it had not bound yet) and ``found`` (the marker in Redis now,
    ``None`` when absent).  An operator restores the data (then the store carries on) or
    accepts the loss and restarts the processes; see ``docs/redis.md``.
    """

    retryable = False


def data_lost(prefix: str, expected: str | None, found: str | None) -> RedisDataLostError:
    """The error for a marker that is not *expected* (*found*: what Redis holds)."""
    if expected is None:
        why = (
            f"Redis holds no stepkernel epoch marker for prefix {prefix!r} and the store "
            "was opened with create=False: this Redis is empty or lost its data"
        )
    elif found is None:
        why = (
            f"the epoch marker of prefix {prefix!r} is gone from Redis: it restarted "
            "empty or was flushed, and every record and message this store wrote may be "
            "lost; refusing to continue on an empty store"
        )
    else:
        why = (
            f"the epoch marker of prefix {prefix!r} changed ({expected} -> {found}): Redis "
            "lost the data this store had seen and another process started afresh; "
            "refusing to continue"
        )
    return RedisDataLostError(
        f"Redis data lost: {why} (see docs/redis.md)",
        prefix=prefix,
        expected=expected,
        found=found,
        operation="epoch",
    )


def found_marker(reply: str) -> str | None:
    """The marker named by an ``EPOCH_ERROR`` reply (``None`` when it was missing)."""
    found = reply[len(EPOCH_ERROR) :].strip()
    return None if found in ("", MISSING) else found


def unavailable(operation: str, error: BaseException) -> StoreUnavailableError:
    """The port error for a driver *error* raised by *operation*."""
    return StoreUnavailableError(
        f"Redis store {operation} failed: {type(error).__name__}: {error}",
        operation=operation,
    )
