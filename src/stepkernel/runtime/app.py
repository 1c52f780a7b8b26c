"""``App``: the registry, the ports and the public verbs."""

from __future__ import annotations

import contextlib
import math
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from stepkernel.domain.errors import ActionNotFoundError, ConflictError, InvalidInputError
from stepkernel.domain.events import (
    ActionSpec,
    CancelRequested,
    CompletionRequested,
    RootSubmitted,
)
from stepkernel.domain.ids import root_id_for_key
from stepkernel.domain.messages import Message
from stepkernel.domain.records import ACTION, ActionRecord, Tombstone
from stepkernel.domain.status import ActionStatus, StepStatus
from stepkernel.ports.codec import ArgumentCodec, JsonCodec
from stepkernel.ports.store import ActionQuery, Commit, WorkflowStore
from stepkernel.runtime.engine import Engine
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.prepare import prepare
from stepkernel.runtime.recovery import missing_wakeups
from stepkernel.runtime.registry import Registry
from stepkernel.runtime.snapshot import Action, ActionTree

_NON_TERMINAL = frozenset({ActionStatus.PENDING, ActionStatus.PERFORMING})
_TERMINAL = frozenset(s for s in ActionStatus if s.terminal)


class App:
    """The application: a :class:`Registry` bound to a store.

    Verbs: :meth:`invoke_later`, :meth:`invoke_now`, :meth:`complete`,
    :meth:`complete_outbound`, :meth:`cancel`, :meth:`get`, :meth:`tree`,
    :meth:`recover`, :meth:`run_pending`, and :meth:`worker` to start a worker pool.
    """

    def __init__(
        self,
        registry: Registry,
        store: WorkflowStore,
        *,
        codec: ArgumentCodec | None = None,
        retry: RetryPolicy | None = None,
        handled: tuple[type[BaseException], ...] = (),
        new_id: Callable[[], str] | None = None,
        rng: random.Random | None = None,
        lease_seconds: float = 60.0,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self.registry = registry
        self.store = store
        self.codec = codec or JsonCodec()
        self.lease_seconds = lease_seconds
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._handled: list[type[BaseException]] = list(handled)
        self.engine = Engine(
            registry,
            store,
            self.codec,
            retry=retry or RetryPolicy(),
            handled=self._handled,
            rng=rng,
        )

    # -- invoking --------------------------------------------------------------------------

    def invoke_later(
        self, actor: Any, name: str, *arguments: Any, idempotency_key: str | None = None
    ) -> Action:
        """Submit a root action; a worker runs it.  The same *idempotency_key* always
        returns the same root.  Runs the before hook and resolvers now, in this thread."""
        root_id = root_id_for_key(idempotency_key) if idempotency_key else self._new_id()
        if idempotency_key:
            existing = self._load(root_id)
            if existing is not None:
                return Action.from_record(existing, outcome="exists")
        spec = prepare(self.registry, self.codec, actor, name, arguments, action_id=root_id)
        if not isinstance(spec, ActionSpec):
            return Action(id=None, name=name, status=spec.status, outcome="short_circuited")
        decision = self.engine.apply(RootSubmitted(spec))
        if decision.result_id is None:
            assert decision.result_status is not None
            return Action(
                id=None,
                name=name,
                status=decision.result_status,
                actor_type=spec.actor_type,
                actor_key=spec.actor_key,
                checksum=spec.checksum,
                outcome=decision.outcome,
            )
        return self.get(decision.result_id, outcome=decision.outcome)

    def invoke_now(
        self, actor: Any, name: str, *arguments: Any, idempotency_key: str | None = None
    ) -> Action:
        """Submit a root action and run it in this thread until it waits on children,
        timers or an outside completion (or finishes).  Returns its snapshot then."""
        action = self.invoke_later(actor, name, *arguments, idempotency_key=idempotency_key)
        if action.id is None or action.outcome not in ("created",):
            return action
        self.drive(action.id)
        return self.get(action.id, outcome=action.outcome)

    def drive(self, action_id: str) -> None:
        """Run *action_id*'s due steps inline, while they are due and not leased elsewhere.

        The lease on the step in hand is extended while its body runs, as a worker's
        heartbeat would, so a long inline body is not delivered to a worker meanwhile.
        """
        while True:
            record = self._load(action_id)
            step = None if record is None else record.current_step
            if (
                record is None
                or step is None
                or record.status is not ActionStatus.PERFORMING
                or step.status is not StepStatus.PENDING
            ):
                return
            leased = self.store.lease(
                worker=f"inline-{action_id}",
                limit=1,
                lease_seconds=self.lease_seconds,
                ids=[Message.run(action_id, step.index, step.attempt, 0.0).id],
            )
            if not leased:
                return
            with self._heartbeat(f"inline-{action_id}", leased[0].message.id):
                self.engine.handle(leased[0])

    @contextlib.contextmanager
    def _heartbeat(self, worker: str, message_id: str) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_seconds / 3):
                self.store.extend([message_id], worker=worker, lease_seconds=self.lease_seconds)

        thread = threading.Thread(target=beat, name="stepkernel-inline-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # -- outside commands ------------------------------------------------------------------

    def complete(
        self,
        action_id: str,
        status: str | ActionStatus = ActionStatus.SUCCEEDED,
        payload: Any = None,
        *,
        completion_id: str | None = None,
    ) -> Action:
        """Complete an outbound action from outside.

        A completion that arrives before the action waits is kept and applied when it
        does; the same completion twice (same *completion_id*, by default derived from
        status and payload) is a no-op.  Raises :class:`ActionNotFoundError`,
        :class:`ActionFinishedError` or :class:`NotOutboundError` and changes nothing
        otherwise.
        """
        value = ActionStatus(status)
        encoded = None if payload is None else self.codec.encode(payload)
        cid = completion_id or f"{value.value}:{encoded or ''}"
        decision = self.engine.apply(
            CompletionRequested(
                action_id=action_id, completion_id=cid, status=value, payload=encoded
            )
        )
        return self.get(action_id, outcome=decision.outcome)

    def current_outbound(self, actor: Any, name: str) -> Action | None:
        """The outbound action *name* on *actor* that a completion addresses: among those
        performing, the ones already awaiting their completion first, then the one that
        started first (completions answer requests in the order they were made)."""
        actor_type = self.registry.actor_type_of(actor)
        found = self.store.find_actions(
            ActionQuery(
                actor_type=actor_type.name,
                actor_key=actor_type.key(actor),
                name=name,
                statuses=frozenset({ActionStatus.PERFORMING}),
            )
        )
        outbound = [r for r in found if r.outbound]
        if not outbound:
            return None
        first = min(
            outbound,
            key=lambda r: (
                not r.awaiting_completion,
                r.started_at or 0.0,
                r.created_at,
                len(r.id),  # sequential ids (r9 before r10) when times tie
                r.id,
            ),
        )
        return Action.from_record(first)

    def complete_outbound(
        self,
        actor: Any,
        name: str,
        status: str | ActionStatus = ActionStatus.SUCCEEDED,
        payload: Any = None,
        *,
        completion_id: str | None = None,
    ) -> Action:
        """Complete the current outbound action *name* on *actor* (see :meth:`complete`)."""
        current = self.current_outbound(actor, name)
        if current is None or current.id is None:
            raise ActionNotFoundError(
                f"no outbound {name!r} performing on {self.registry.actor_type_of(actor).name}",
                name=name,
            )
        return self.complete(current.id, status, payload, completion_id=completion_id)

    def cancel(self, action_id: str, reason: str = "cancelled from outside") -> Action:
        """Cancel an action; its in-flight descendants are cancelled after it."""
        decision = self.engine.apply(CancelRequested(action_id=action_id, reason=reason))
        return self.get(action_id, outcome=decision.outcome)

    # -- reading -----------------------------------------------------------------------------

    def _load(self, action_id: str) -> ActionRecord | None:
        record = self.store.load([(ACTION, action_id)])[(ACTION, action_id)]
        assert record is None or isinstance(record, ActionRecord)
        return record

    def get(self, action_id: str, *, outcome: str = "") -> Action:
        """The action's current snapshot, or :class:`ActionNotFoundError`."""
        record = self._load(action_id)
        if record is None:
            raise ActionNotFoundError(f"no action {action_id!r}", action_id=action_id)
        return Action.from_record(record, outcome=outcome)

    def find(self, query: ActionQuery) -> list[Action]:
        return [Action.from_record(r) for r in self.store.find_actions(query)]

    def tree(self, root_id: str) -> ActionTree:
        """*root_id* and every action created under it."""
        records = self.store.find_actions(ActionQuery(root_id=root_id))
        by_parent: dict[str | None, list[ActionRecord]] = {}
        for record in records:
            parent = None if record.parent is None else record.parent.action_id
            by_parent.setdefault(parent, []).append(record)
        root = self._load(root_id)
        if root is None:
            raise ActionNotFoundError(f"no action {root_id!r}", action_id=root_id)

        def build(record: ActionRecord) -> ActionTree:
            kids = sorted(by_parent.get(record.id, ()), key=lambda r: r.id)
            return ActionTree(Action.from_record(record), tuple(build(k) for k in kids))

        return build(root)

    # -- operations ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def handling(self, *exceptions: type[BaseException]) -> Iterator[None]:
        """Within the block, these exception types turn a step into ``failed`` at once
        instead of being retried."""
        self._handled.extend(exceptions)
        try:
            yield
        finally:
            for kind in exceptions:
                self._handled.remove(kind)

    def run_pending(self, *, limit: int | None = None, worker: str = "inline") -> int:
        """Process due messages in this thread until none is due; returns how many."""
        done = 0
        while limit is None or done < limit:
            batch = self.store.lease(
                worker=worker,
                limit=16 if limit is None else min(16, limit - done),
                lease_seconds=self.lease_seconds,
            )
            if not batch:
                return done
            for delivery in batch:
                self.engine.handle(delivery)
                done += 1
        return done

    def recover(self) -> int:
        """Give every unfinished action that lacks a wake-up a message again (idempotent;
        message ids are deterministic).  Returns how many messages were enqueued."""
        messages = missing_wakeups(self.store)
        if messages:
            self.store.commit(Commit(enqueue=tuple(messages)))
        return len(messages)

    def prune(self, *, older_than: float) -> int:
        """Delete every finished tree whose root finished more than *older_than* seconds
        ago (by the store's clock) and none of whose actions is still running or owes
        callbacks.  One commit per tree; returns how many actions were deleted."""
        cutoff = self.store.now() - older_than
        deleted = 0
        # Created no later than the cutoff (an action finishes after it is created): an
        # indexed range of old finished actions, not every finished action.
        old = ActionQuery(statuses=_TERMINAL, created_before=math.nextafter(cutoff, math.inf))
        for root in self.store.find_actions(old):
            if root.parent is not None or root.finished_at is None or root.finished_at > cutoff:
                continue
            tree = self.store.find_actions(ActionQuery(root_id=root.id))
            if any(not r.settled_for_parents for r in tree):
                continue
            try:
                self.store.commit(
                    Commit(deletes=tuple(Tombstone(key=r.key, version=r.version) for r in tree))
                )
            except ConflictError:
                continue
            deleted += len(tree)
        return deleted

    def retry(self, action_id: str) -> Action:
        """Invoke a finished root again, with the same actor, name and arguments, as a new
        root (the old one is kept).  Raises :class:`ActionNotFoundError` for an unknown
        id and :class:`InvalidInputError` for an unfinished action or a child."""
        record = self._load(action_id)
        if record is None:
            raise ActionNotFoundError(f"no action {action_id!r}", action_id=action_id)
        if not record.status.terminal or record.parent is not None:
            raise InvalidInputError(
                f"only finished roots can be retried; {action_id} is "
                f"{'a child' if record.parent is not None else record.status.value}",
                action_id=action_id,
            )
        actor = self.registry.load_actor(record.actor_type, record.actor_key)
        return self.invoke_later(actor, record.name, *self.codec.decode(record.arguments))

    def worker(self, **options: Any) -> Any:
        """A :class:`~stepkernel.runtime.worker.Worker` for this app (not started)."""
        from stepkernel.runtime.worker import Worker

        return Worker(self, **options)

    def unfinished(self) -> list[Action]:
        return self.find(ActionQuery(statuses=_NON_TERMINAL))
