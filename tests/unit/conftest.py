"""Shared actors and fixtures for the unit tests (public API, in-memory app)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from stepkernel import App, Registry, RetryPolicy
from stepkernel.testing import FakeClock, memory_app

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=1, multiplier=2, jitter=0)
"""Three runs, retried after 1s then 2s, no jitter: delays are exact."""


@attrs.define(eq=False)
class Server:
    """A registered actor; loaded back from the per-test :class:`Fleet`."""

    id: int
    calls: list[tuple[str, tuple[Any, ...]]] = attrs.field(factory=list)

    def ping(self, *arguments: Any) -> None:
        self.calls.append(("ping", arguments))

    def lane_of(self, *_arguments: Any) -> str:
        return f"fleet/{self.id}"

    def checksum_of(self, *arguments: Any) -> list[Any]:
        return list(arguments)

    def timeout_of(self, *_arguments: Any) -> float:
        return 5.0


class SubServer(Server):
    """A subclass registered on its own (loads back as a SubServer)."""


@attrs.define
class Fleet:
    """The actors of one test, so loaded actors are the ones the test holds."""

    servers: dict[tuple[type, int], Server] = attrs.field(factory=dict)

    def get(self, id: int, cls: type[Server] = Server) -> Server:
        return self.servers.setdefault((cls, id), cls(id))


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


def clock_of(app: App) -> FakeClock:
    """The fake clock of a memory app."""
    clock = app.store.clock  # type: ignore[attr-defined]
    assert isinstance(clock, FakeClock)
    return clock


def records(app: App) -> dict[Any, Any]:
    """Every stored record of a memory app."""
    return app.store.all_records()  # type: ignore[attr-defined, no-any-return]


def statuses(app: App, root_id: str | None) -> dict[str, str]:
    """Action id -> status value for every action of the tree under *root_id*."""
    assert root_id is not None
    return {a.id or "": a.status.value for a in app.tree(root_id).walk()}
