"""Known bugs, planted on request, that the simulation suite must catch (its teeth).

:func:`planted` is the test-only switch: inside ``with planted(name):`` one internal
function of the engine is replaced by a version with the bug, and restored afterwards.
Nothing in ``src/`` knows about it.  Each bug is one that durable-workflow engines
(including the Ruby gem this project descends from) have actually shipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import attrs

from stepkernel.domain import kernel, lanes, progress
from stepkernel.domain.events import CompletionRequested
from stepkernel.domain.lanes import Submitted
from stepkernel.domain.progress import advance
from stepkernel.domain.records import ACTION, LANE, ActionRecord, evolve
from stepkernel.domain.status import ActionStatus
from stepkernel.domain.transaction import Tx
from stepkernel.domain.view import Decision
from stepkernel.ports.store import ActionQuery, Commit
from stepkernel.runtime.app import App
from stepkernel.runtime.engine import Engine
from stepkernel.testing.proxy import StoreProxy


def _completion_twice() -> contextlib.AbstractContextManager[Any]:
    """A duplicate completion is applied again instead of being a no-op."""
    original = kernel._completion_requested

    def buggy(tx: Tx, event: CompletionRequested) -> Decision:
        record = tx.action(event.action_id)
        if record is not None and record.completion_id == event.completion_id:
            tx.put(evolve(record, output=event.payload, finished_at=tx.now))
            return tx.decision("applied", record.id, record.status)
        return original(tx, event)

    return mock.patch.object(kernel, "_completion_requested", buggy)


def _count_settlements() -> contextlib.AbstractContextManager[Any]:
    """Settlement is a count: a duplicate settles *another* open dependency."""
    original = progress.settle_dependency  # what kernel._settle calls

    def buggy(tx: Tx, action_id: str, step_index: int, dep: str, *, ok: bool) -> str:
        record = tx.action(action_id)
        step = None if record is None else record.current_step
        if record is not None and step is not None and dep in step.settled and step.open:
            other = sorted(step.open)[0]
            advance(tx, record, evolve(step, settled=step.settled | {other}))
            return "applied"
        return original(tx, action_id, step_index, dep, ok=ok)

    return mock.patch.object(kernel, "settle_dependency", buggy)


def _keep_lane_on_timeout() -> contextlib.AbstractContextManager[Any]:
    """A timed-out action keeps holding its lane."""
    original = lanes.leave_lane

    def buggy(tx: Tx, record: ActionRecord) -> None:
        if record.status is ActionStatus.TIMED_OUT:
            return
        original(tx, record)

    return mock.patch.object(progress, "leave_lane", buggy)


class _SplitCommits(StoreProxy):
    """Commits records first and the messages in a second commit (a dual write)."""

    def commit(self, commit: Commit) -> None:
        self.inner.commit(attrs.evolve(commit, enqueue=()))
        if commit.enqueue:
            self.inner.commit(Commit(enqueue=commit.enqueue))


def _messages_outside_commit() -> contextlib.AbstractContextManager[Any]:
    """The engine commits a transition's records, then its messages separately."""
    original = Engine.apply

    def buggy(self: Engine, event: Any, **kwargs: Any) -> Decision:
        store = self.store
        self.store = _SplitCommits(store)
        try:
            return original(self, event, **kwargs)
        finally:
            self.store = store

    return mock.patch.object(Engine, "apply", buggy)


_GRAVEYARD: dict[tuple[str, str, str], str] = {}


def _reuse_superseded() -> contextlib.AbstractContextManager[Any]:
    """Checksum reuse also finds actions that were superseded (and will never run)."""
    original = lanes.submit  # what kernel._body_ran and _root_submitted call

    def buggy(tx: Tx, spec: Any, **kwargs: Any) -> Submitted:
        parent = kwargs.get("parent")
        if spec.checksum is not None:
            dead = _GRAVEYARD.get((spec.concurrency_key, spec.checksum_key, spec.checksum))
            if dead is not None and dead != spec.id:
                tx.need([(ACTION, dead)])
                target = tx.action(dead)
                if target is not None:
                    if parent is not None and parent not in target.dependents:
                        tx.put(evolve(target, dependents=(*target.dependents, parent)))
                    return Submitted("joined", dead)
        tx.need([(LANE, spec.concurrency_key)])
        queue = tx.lane(spec.concurrency_key).queue
        result = original(tx, spec, **kwargs)
        for entry in queue:
            if entry.checksum is not None and entry.action_id != result.action_id:
                key = (spec.concurrency_key, entry.checksum_key, entry.checksum)
                _GRAVEYARD[key] = entry.action_id
        return result

    @contextlib.contextmanager
    def patched() -> Iterator[None]:
        _GRAVEYARD.clear()
        with mock.patch.object(kernel, "submit", buggy):
            yield
        _GRAVEYARD.clear()

    return patched()


def _complete_by_actor_and_name() -> contextlib.AbstractContextManager[Any]:
    """Outside completion addresses "the" outbound action of an actor and name, not
    the action id it was sent for."""
    original = App.complete

    def buggy(self: App, action_id: str, *args: Any, **kwargs: Any) -> Any:
        record = self._load(action_id)
        if record is not None:
            query = ActionQuery(
                actor_type=record.actor_type, actor_key=record.actor_key, name=record.name
            )
            live = [r for r in self.store.find_actions(query) if not r.status.terminal]
            if live:
                # "The" outbound action: the one waiting, else the oldest.
                live.sort(key=lambda r: (not r.awaiting_completion, r.created_at, r.id))
                action_id = live[0].id
        return original(self, action_id, *args, **kwargs)

    return mock.patch.object(App, "complete", buggy)


def _accept_stale_attempt() -> contextlib.AbstractContextManager[Any]:
    """A body outcome is accepted for the current step whatever attempt it came from."""
    original = kernel._current_pending_step

    def buggy(tx: Tx, action_id: str, step: int, attempt: int) -> tuple[ActionRecord, Any] | None:
        record = tx.action(action_id)
        if record is not None and record.current_step is not None:
            attempt = record.current_step.attempt
        return original(tx, action_id, step, attempt)

    return mock.patch.object(kernel, "_current_pending_step", buggy)


BUGS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "completion_twice": _completion_twice,
    "count_settlements": _count_settlements,
    "keep_lane_on_timeout": _keep_lane_on_timeout,
    "messages_outside_commit": _messages_outside_commit,
    "reuse_superseded": _reuse_superseded,
    "complete_by_actor_and_name": _complete_by_actor_and_name,
    "accept_stale_attempt": _accept_stale_attempt,
}
"""Every planted bug, by name."""


@contextlib.contextmanager
def planted(name: str) -> Iterator[None]:
    """Plant bug *name* (a key of :data:`BUGS`) for the duration of the block."""
    with BUGS[name]():
        yield
