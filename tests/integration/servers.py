"""Where the integration tests find their servers, and what happens when one is missing.

Defaults are the local services (PostgreSQL with trust auth on 127.0.0.1:5432, Redis on
127.0.0.1:6379); ``STEPKERNEL_POSTGRES_URL`` / ``STEPKERNEL_REDIS_URL`` override them.
Without a server a test is skipped with the reason -- except under ``CI=true``, where a
missing server is a failure, never a silent skip (``.ci/run`` starts the servers).
"""

from __future__ import annotations

import os
import shutil

import pytest

POSTGRES_URL = os.environ.get(
    "STEPKERNEL_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("STEPKERNEL_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(what: str, why: str) -> None:
    """Skip (locally) or fail (under CI=true) because *what* is not reachable."""
    message = f"{what} is not reachable ({why})"
    if under_ci():
        pytest.fail(f"{message}; CI=true requires it (.ci/run starts it)", pytrace=False)
    pytest.skip(f"{message}; start it or set the URL variable to run these tests")
