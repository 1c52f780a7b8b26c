"""Lost races: driver errors that mean "another transaction won, try again".

Under concurrent writers a database may abort a transaction that did nothing wrong: a
deadlock between row locks taken in different orders (PostgreSQL ``40P01``, MySQL
``1213``), a serialization failure (``40001``, at ``REPEATABLE READ`` or above), or a
lock that could not be had in time (PostgreSQL ``55P03``, MySQL ``1205``).  The whole
transaction was rolled back, so running it again is safe.  The store redoes such a
transaction a few times (:data:`ATTEMPTS`), after a short random pause
(:func:`pause`), and only then reports it: as a
:class:`~stepkernel.domain.errors.ConflictError` for a commit (the runtime re-reads and
decides again), as a :class:`~stepkernel.domain.errors.StoreUnavailableError` for
queue operations.
"""

from __future__ import annotations

import random
import time
from typing import Any

__all__ = ["ATTEMPTS", "lost_race", "pause", "sqlstate"]

ATTEMPTS = 4
"""Tries of one transaction the database keeps aborting as a lost race."""

_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""serialization_failure, deadlock_detected, lock_not_available."""

_MYSQL_CODES = frozenset({1205, 1213})
"""ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK."""


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error (or of the one a SQLAlchemy error wraps), if the
    driver reports one."""
    driver_error = getattr(error, "orig", None) or error
    state = getattr(driver_error, "sqlstate", None) or getattr(driver_error, "pgcode", None)
    return state if isinstance(state, str) else None


def lost_race(error: BaseException) -> bool:
    """Whether *error* (a driver error, or a SQLAlchemy error wrapping one) is a
    deadlock, serialization failure or lock timeout: the transaction was aborted and
    may simply be run again."""
    if sqlstate(error) in _SQLSTATES:
        return True
    driver_error = getattr(error, "orig", None) or error
    args: tuple[Any, ...] = tuple(getattr(driver_error, "args", ()))
    return bool(args) and isinstance(args[0], int) and args[0] in _MYSQL_CODES


def pause(attempt: int) -> None:
    """Sleep a random moment before try *attempt* + 1 (up to 2, 4, 8 ms...), so the
    transactions that collided do not collide again in lockstep."""
    time.sleep(random.uniform(0.0, 0.002 * (2**attempt)))  # jitter, not crypto
