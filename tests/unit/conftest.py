"""Fixtures for the unit tests (public API, in-memory app); the actors live in
``actors.py``."""

from __future__ import annotations

import pytest
from actors import FAST_RETRY, Fleet, Server, SubServer

from stepkernel import App, Registry
from stepkernel.testing import memory_app


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def reg(fleet: Fleet) -> Registry:
    """A registry with ``Server`` and ``SubServer`` registered (no actions)."""
    registry = Registry()
    registry.register_actor(Server, key=lambda s: s.id, load=lambda k: fleet.get(int(k)))
    registry.register_actor(
        SubServer, key=lambda s: s.id, load=lambda k: fleet.get(int(k), SubServer)
    )
    return registry


@pytest.fixture
def app(reg: Registry) -> App:
    """An in-memory app on *reg* with the fast retry policy."""
    return memory_app(reg, retry=FAST_RETRY)
