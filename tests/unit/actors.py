"""Actors and helpers shared by the unit tests (imported as ``actors``: a plain module
name, unlike ``conftest``, which several test folders define)."""

from __future__ import annotations

from typing import Any

import attrs

from stepkernel import App, RetryPolicy
from stepkernel.testing import FakeClock

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


def clock_of(app: App) -> FakeClock:
    """The fake clock of a memory app."""
    clock = app.store.clock
    assert isinstance(clock, FakeClock)
    return clock


def records(app: App) -> dict[Any, Any]:
    """Every stored record of a memory app."""
    return app.store.all_records()  # type: ignore[attr-defined, no-any-return]


def statuses(app: App, root_id: str | None) -> dict[str, str]:
    """Action id -> status value for every action of the tree under *root_id*."""
    assert root_id is not None
    return {a.id or "": a.status.value for a in app.tree(root_id).walk()}
