"""Helpers for testing your own workflows on the in-memory store.

``memory_app`` builds an app on :class:`InMemoryWorkflowStore` with a :class:`FakeClock`;
``drain`` runs everything queued, advancing the fake clock to each next timer (waits,
retries, timeouts) until nothing is left; ``complete_outbound`` completes the outbound
actions that are waiting; ``assert_invoked`` checks an action was invoked.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.checksum import canonical_json
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.store import ActionQuery
from stepkernel.runtime.app import App
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.registry import Registry
from stepkernel.runtime.snapshot import Action
from stepkernel.testing.clock import FakeClock

OutboundAnswer = Callable[[Action], Any]


def memory_app(
    registry: Registry,
    *,
    clock: FakeClock | None = None,
    retry: RetryPolicy | None = None,
    handled: tuple[type[BaseException], ...] = (),
    seed: int = 0,
) -> App:
    """An :class:`App` on a fresh in-memory store with a fake clock; ids are sequential
    (``r1``, ``r2``...) and retry jitter is seeded, so runs are reproducible."""
    counter = itertools.count(1)
    return App(
        registry,
        InMemoryWorkflowStore(clock=clock or FakeClock()),
        retry=retry,
        handled=handled,
        new_id=lambda: f"r{next(counter)}",
        rng=random.Random(seed),
    )


def drain(
    app: App,
    *,
    advance_time: bool = True,
    outbound: OutboundAnswer | None = None,
    max_messages: int = 1_000_000,
) -> int:
    """Process every queued message; with a fake clock, jump to each next due timer.

    *outbound*, if given, is called with every outbound action that waits for a
    completion; return ``None`` to leave it waiting, ``True``/``"succeeded"``/a status to
    complete it, or a ``(status, payload)`` pair.  Returns how many messages ran.
    """
    done = 0
    clock = app.store.clock
    while done < max_messages:
        ran = app.run_pending(limit=max_messages - done)
        done += ran
        if ran:
            continue
        if outbound is not None and complete_outbound(app, outbound):
            continue
        due = app.store.next_due()
        if due is None or not advance_time or not isinstance(clock, FakeClock):
            break
        clock.advance_to(due)
    return done


def waiting_outbound(app: App) -> list[Action]:
    """Outbound actions performing and waiting for a completion."""
    return [
        a
        for a in app.find(ActionQuery(statuses=frozenset({ActionStatus.PERFORMING})))
        if a.awaiting_completion
    ]


def complete_outbound(app: App, answer: OutboundAnswer | str = "succeeded") -> list[Action]:
    """Complete every waiting outbound action (see :func:`drain` for *answer*)."""
    completed = []
    for action in waiting_outbound(app):
        assert action.id is not None
        result = answer(action) if callable(answer) else answer
        if result is None:
            continue
        payload = None
        if isinstance(result, tuple):
            result, payload = result
        status = ActionStatus.SUCCEEDED if result is True else ActionStatus(result)
        completed.append(app.complete(action.id, status, payload))
    return completed


@contextlib.contextmanager
def handle_exceptions(app: App, *exceptions: type[BaseException]) -> Iterator[None]:
    """Within the block, *exceptions* raised by user code fail the step at once."""
    with app.handling(*(exceptions or (Exception,))):
        yield


def invoked(app: App, name: str | None = None, actor: Any = None) -> list[Action]:
    """Actions invoked so far (optionally only *name*, only on *actor*)."""
    query = ActionQuery(name=name)
    if actor is not None:
        actor_type = app.registry.actor_type_of(actor)
        query = ActionQuery(name=name, actor_type=actor_type.name, actor_key=actor_type.key(actor))
    return app.find(query)


def assert_invoked(
    app: App,
    name: str,
    *arguments: Any,
    actor: Any = None,
    times: int | None = None,
    status: str | ActionStatus | None = None,
) -> list[Action]:
    """Assert action *name* was invoked (with exactly *arguments*, if given; *times*
    times, if given; ending in *status*, if given).  Returns the matching actions."""
    found = invoked(app, name, actor)
    if arguments:
        wanted = json.loads(canonical_json(list(arguments)))
        found = [a for a in found if list(a.arguments) == wanted]
    if status is not None:
        found = [a for a in found if a.status is ActionStatus(status)]
    description = f"{name}{tuple(arguments) if arguments else ''}"
    if times is None:
        assert found, f"expected {description} to be invoked; it was not"
    else:
        assert len(found) == times, f"expected {description} {times} time(s), got {len(found)}"
    return found
