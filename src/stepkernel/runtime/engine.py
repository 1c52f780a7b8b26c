"""The engine: feeds events to the kernel and commits its decisions; runs user code for
delivered messages.  The only place (with :mod:`stepkernel.runtime.prepare`) that calls
user code, always outside any transaction.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from stepkernel.domain.errors import (
    ConflictError,
    CorruptRecordError,
    DefinitionError,
    InvalidInputError,
    MissingRecordsError,
    StepkernelError,
)
from stepkernel.domain.events import (
    CallbacksRan,
    ChildSpec,
    CompletionRequested,
    Event,
    MessageDelivered,
    StepBodiesRan,
    StepBodyRaised,
    StepBodyRan,
)
from stepkernel.domain.ids import child_id
from stepkernel.domain.kernel import decide, keys_for
from stepkernel.domain.messages import Message, MessageKind
from stepkernel.domain.records import (
    ACTION,
    ActionRecord,
    ErrorInfo,
    Record,
    RecordKey,
)
from stepkernel.domain.replay import Entry
from stepkernel.domain.status import ActionStatus, StepStatus
from stepkernel.domain.view import Decision, View
from stepkernel.ports.codec import ArgumentCodec
from stepkernel.ports.store import Commit, Delivery, WorkflowStore
from stepkernel.runtime.calls import call_user, error_info
from stepkernel.runtime.handles import JobHandle, StepHandle
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.prefetch import BatchRecords, message_keys
from stepkernel.runtime.prepare import prepare
from stepkernel.runtime.quarantine import quarantine
from stepkernel.runtime.registry import Registry, ResolvedAction
from stepkernel.runtime.snapshot import Action

log = logging.getLogger("stepkernel")

MAX_TRIES = 64


@attrs.frozen
class RanBody:
    """A step body that ran and what it produced, not committed yet: the leased
    *delivery*, the body's outcome *event* and the records *loaded* to run it."""

    delivery: Delivery
    event: StepBodyRan | StepBodyRaised
    loaded: Mapping[RecordKey, Record | None]


def _runnable(record: ActionRecord | None, message: Message) -> bool:
    """Whether *message* still asks to run the current, pending step of *record*."""
    step = None if record is None else record.current_step
    return not (
        record is None
        or step is None
        or record.status is not ActionStatus.PERFORMING
        or step.index != message.step
        or step.attempt != message.attempt
        or step.status is not StepStatus.PENDING
    )


class Engine:
    """Applies events (load, decide, commit; re-decide on conflicts) and handles
    deliveries.  Thread-safe: holds no per-event state."""

    def __init__(
        self,
        registry: Registry,
        store: WorkflowStore,
        codec: ArgumentCodec,
        *,
        retry: RetryPolicy,
        handled: list[type[BaseException]],
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.codec = codec
        self.retry = retry
        self.handled = handled
        self.rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.conflicts = 0
        self.transitions = 0
        self.journal: Callable[[Entry], None] | None = None
        """Called with every committed event (see :mod:`stepkernel.domain.replay`); in
        commit order when one thread commits (not a ``Worker`` with group commit, whose
        flusher thread commits too)."""
        self.body_runs = 0

    # -- applying events -------------------------------------------------------------------

    def apply(
        self,
        event: Event,
        *,
        ack: Iterable[str] = (),
        preloaded: Mapping[RecordKey, Record | None] | None = None,
        known: BatchRecords | None = None,
    ) -> Decision:
        """Decide *event* and commit the decision (acknowledging *ack* with it).

        Loads what the kernel asks for (each ask names records not loaded yet, so this
        ends); on a version conflict reloads and decides again (and tells *known*, the
        batch's records, what it reloaded), giving up with :class:`ConflictError` after
        ``MAX_TRIES`` conflicts.  Raises what the kernel raises for misuse (e.g.
        :class:`CompletionError`).
        """
        store = self.store
        view: dict[RecordKey, Record | None] = dict(preloaded) if preloaded else {}
        missing = [k for k in keys_for(event) if k not in view]
        if missing:
            view.update(store.load(missing))
        acked = tuple(ack)
        conflicts = 0
        while True:
            now = store.now()
            try:
                decision = decide(View(records=view), event, now)
            except MissingRecordsError as need:
                wanted = [k for k in need.keys if k not in view]
                if not wanted:  # asks for what it was given: a kernel bug, not a retry
                    raise
                view.update(store.load(wanted))
                continue
            commit = Commit(
                writes=decision.writes,
                deletes=decision.deletes,
                guards=decision.guards,
                enqueue=decision.messages,
                ack=acked,
            )
            if decision.empty:
                if acked:
                    store.ack(acked)
                return decision
            try:
                store.commit(commit)
            except ConflictError:
                self.conflicts += 1
                conflicts += 1
                if conflicts >= MAX_TRIES:
                    raise ConflictError(
                        f"gave up on {type(event).__name__} after {MAX_TRIES} conflicting tries",
                        event=type(event).__name__,
                    ) from None
                view = store.load(list(view))
                if known is not None:
                    known.remember(view)
                continue
            self.transitions += 1
            if self.journal is not None:
                self.journal(Entry.of(event, now, decision))
            return decision

    # -- deliveries --------------------------------------------------------------------------

    def handle(self, delivery: Delivery, known: BatchRecords | None = None) -> Decision | None:
        """Process one leased message and acknowledge it in the commit it causes.

        *known*: the records of the batch the message came in (see
        :mod:`stepkernel.runtime.prefetch`), read from and kept current; ``None`` loads
        what the message needs from the store."""
        message = delivery.message
        if message.kind is MessageKind.RUN:
            return self._guarded(message, known, lambda: self._run_step(delivery, known))
        if message.kind is MessageKind.AFTER:
            return self._guarded(message, known, lambda: self._run_callbacks(delivery))

        def deliver() -> Decision:
            preloaded = None if known is None else known.load(message_keys(message))
            return self.apply(
                MessageDelivered(message), ack=(message.id,), preloaded=preloaded, known=known
            )

        return self._guarded(message, known, deliver)

    def _guarded(
        self, message: Message, known: BatchRecords | None, work: Callable[[], Decision]
    ) -> Decision | None:
        """Run *work* for *message*: quarantine a record that does not decode (``None``),
        keep *known* current with what was committed, and forget it on any other error."""

        def set_aside(exc: CorruptRecordError) -> None:
            if known is not None:
                known.forget(message_keys(message))
            quarantine(self.store, exc, message)

        return self._kept_current(known, work, set_aside)

    @staticmethod
    def _kept_current(
        known: BatchRecords | None,
        work: Callable[[], Decision],
        corrupt: Callable[[CorruptRecordError], None],
    ) -> Decision | None:
        """*work*'s decision, with *known* told what it committed; ``None`` after
        *corrupt* handled a record that does not decode; on any other error *known*
        forgets everything and the error propagates."""
        try:
            decision = work()
        except CorruptRecordError as exc:
            corrupt(exc)
            return None
        except BaseException:
            if known is not None:
                known.forget()
            raise
        if known is not None:
            known.committed(decision)
        return decision

    # -- group commits -----------------------------------------------------------------------

    def run_step_body(
        self, delivery: Delivery, known: BatchRecords | None = None
    ) -> RanBody | None:
        """For a run message: load its action and run the current step's body (user
        code, outside any transaction); return what it produced, *not committed* (see
        :meth:`commit_bodies`).  ``None`` when the message no longer applies (it is
        then acknowledged).  A record that does not decode is quarantined (``None``)."""
        message = delivery.message
        if message.kind is not MessageKind.RUN:
            raise ValueError(f"not a run message: {message.id}")
        ran: list[RanBody] = []

        def run() -> Decision:
            body = self._ran_body(delivery, known)
            if body is None:
                return Decision(outcome="stale")
            ran.append(body)
            return Decision(outcome="ran")

        self._guarded(message, known, run)
        return ran[0] if ran else None

    def commit_bodies(
        self, ran: Sequence[RanBody], known: BatchRecords | None = None
    ) -> Decision | None:
        """Commit the outcomes of step bodies that ran (one per action) in *one* commit,
        acknowledging their messages with it: a group commit
        (:class:`~stepkernel.domain.events.StepBodiesRan`).  Siblings that settle into
        the same parent step write the parent once, not once each.

        A lone outcome whose records do not decode is quarantined (``None``).  For a
        group, any error (a record that does not decode, the store unavailable,
        conflicts that never end, a kernel error) propagates with nothing committed;
        :class:`~stepkernel.runtime.grouping.RunGroup` then commits the outcomes one at
        a time, so only the message concerned is quarantined."""
        if not ran:
            return None
        if len(ran) == 1:
            only = ran[0]
            return self._guarded(
                only.delivery.message,
                known,
                lambda: self.apply(
                    only.event,
                    ack=(only.delivery.message.id,),
                    preloaded=only.loaded,
                    known=known,
                ),
            )
        preloaded: dict[RecordKey, Record | None] = {}
        for item in ran:
            preloaded.update(item.loaded)

        def reraise(exc: CorruptRecordError) -> None:
            if known is not None:
                known.forget()
            raise exc

        return self._kept_current(
            known,
            lambda: self.apply(
                StepBodiesRan(tuple(item.event for item in ran)),
                ack=tuple(item.delivery.message.id for item in ran),
                preloaded=preloaded,
                known=known,
            ),
            reraise,
        )

    def _load_action(self, action_id: str) -> ActionRecord | None:
        record = self.store.load([(ACTION, action_id)])[(ACTION, action_id)]
        assert record is None or isinstance(record, ActionRecord)
        return record

    def _ran_body(self, delivery: Delivery, known: BatchRecords | None) -> RanBody | None:
        """Load the action of run *delivery* and run its step body; ``None`` (the
        message acknowledged) when that step no longer waits for this run."""
        message = delivery.message
        keys = message_keys(message)
        loaded = self.store.load(keys) if known is None else known.load(keys)
        record = loaded[(ACTION, message.action_id)]
        assert record is None or isinstance(record, ActionRecord)
        if record is None or not _runnable(record, message):
            self.store.ack((message.id,))
            return None
        return RanBody(delivery=delivery, event=self.run_body(record), loaded=loaded)

    def _run_step(self, delivery: Delivery, known: BatchRecords | None = None) -> Decision:
        ran = self._ran_body(delivery, known)
        if ran is None:
            return Decision(outcome="stale")
        return self.apply(ran.event, ack=(delivery.message.id,), preloaded=ran.loaded, known=known)

    def run_body(self, record: ActionRecord) -> StepBodyRan | StepBodyRaised:
        """Run the current step's body for *record* and describe the outcome as an event."""
        step = record.current_step
        assert step is not None
        index, attempt = step.index, step.attempt
        self.body_runs += 1
        try:
            actor_type = self.registry.actor_type_named(record.actor_type)
            resolved = self.registry.resolve(actor_type, record.name)
            if (
                index >= len(resolved.steps)
                or resolved.steps[index].name != record.step_names[index]
            ):
                raise DefinitionError(
                    f"{record.name}: step {index} is now "
                    f"{resolved.steps[index].name if index < len(resolved.steps) else 'missing'}, "
                    f"recorded as {record.step_names[index]!r} (definitions changed)",
                    action_id=record.id,
                )
        except StepkernelError as exc:
            return StepBodyRan(record.id, index, attempt, failed=error_info(exc))
        body = resolved.steps[index]
        try:
            # Loading the actor is user code too: an unknown actor fails the step at once
            # (UnknownActorError), any other error is retried under the retry policy.
            actor = self.registry.load_actor(record.actor_type, record.actor_key)
            arguments = tuple(self.codec.decode(record.arguments))
            if resolved.definition.job is not None and body.fn is resolved.definition.job:
                job = JobHandle(
                    action_id=record.id,
                    name=record.name,
                    actor=actor,
                    arguments=arguments,
                    attempt=attempt,
                )
                call_user(body.fn, job)
                completion = None
                if job.completion is not None:
                    status, payload = job.completion
                    completion = CompletionRequested(
                        action_id=record.id,
                        completion_id=f"job:{record.id}",
                        status=status,
                        payload=self.codec.encode(payload) if payload is not None else None,
                    )
                return StepBodyRan(record.id, index, attempt, completion=completion)
            handle = StepHandle(
                action_id=record.id,
                index=index,
                name=body.name,
                attempt=attempt,
                actor=actor,
                arguments=arguments,
                validate=self._validate_child,
            )
            call_user(body.fn, handle, actor, *arguments)
            if handle.failure is not None:
                return StepBodyRan(
                    record.id, index, attempt, failed=ErrorInfo.of("StepFailed", handle.failure)
                )
            children = self._prepare_children(record, index, handle)
        except (KeyboardInterrupt, SystemExit):
            raise
        except (DefinitionError, InvalidInputError) as exc:
            return StepBodyRan(record.id, index, attempt, failed=error_info(exc))
        except Exception as exc:
            return self._raised(record, resolved, index, attempt, exc)
        return StepBodyRan(record.id, index, attempt, children=children, waits=tuple(handle.waits))

    def _validate_child(self, actor: Any, name: str) -> None:
        self.registry.resolve_for(actor, name)

    def _prepare_children(
        self, record: ActionRecord, index: int, handle: StepHandle
    ) -> tuple[ChildSpec, ...]:
        return tuple(
            prepare(
                self.registry,
                self.codec,
                intent.actor,
                intent.name,
                intent.arguments,
                action_id=child_id(record.id, index, ordinal),
            )
            for ordinal, intent in enumerate(handle.children)
        )

    def is_handled(self, exc: BaseException) -> bool:
        return any(isinstance(exc, kind) for kind in tuple(self.handled))

    def _raised(
        self,
        record: ActionRecord,
        resolved: ResolvedAction,
        index: int,
        attempt: int,
        exc: Exception,
    ) -> StepBodyRan | StepBodyRaised:
        info = error_info(exc)
        if self.is_handled(exc):
            return StepBodyRan(record.id, index, attempt, failed=info)
        policy = resolved.definition.retry or self.retry
        if policy.gives_up_after(attempt):
            log.warning(
                "%s step %s failed after %d attempt(s): %r", record.id, index, attempt + 1, exc
            )
            return StepBodyRaised(record.id, index, attempt, error=info, retry_at=None)
        with self._rng_lock:
            delay = policy.delay(attempt + 1, self.rng)
        return StepBodyRaised(
            record.id, index, attempt, error=info, retry_at=self.store.now() + delay
        )

    # -- after callbacks -------------------------------------------------------------------------

    def _run_callbacks(self, delivery: Delivery) -> Decision:
        message = delivery.message
        record = self._load_action(message.action_id)
        if record is None or record.callbacks != "pending":
            self.store.ack((message.id,))
            return Decision(outcome="stale")
        error: ErrorInfo | None = None
        try:
            actor_type = self.registry.actor_type_named(record.actor_type)
            resolved = self.registry.resolve(actor_type, record.name)
            actor = self.registry.load_actor(record.actor_type, record.actor_key)
            arguments = tuple(self.codec.decode(record.arguments))
            snapshot = Action.from_record(record)
            for fn in resolved.callbacks_for(record.status):
                call_user(fn, snapshot, actor, *arguments)
        except (KeyboardInterrupt, SystemExit):
            raise
        except StepkernelError as exc:
            error = error_info(exc)
        except Exception as exc:
            policy = resolved.definition.retry or self.retry
            if self.is_handled(exc) or policy.gives_up_after(message.attempt):
                error = error_info(exc)
            else:
                with self._rng_lock:
                    delay = policy.delay(message.attempt + 1, self.rng)
                retry = attrs.evolve(
                    message,
                    id=f"after:{record.id}:{message.attempt + 1}",
                    attempt=message.attempt + 1,
                    available_at=self.store.now() + delay,
                )
                self.store.commit(Commit(enqueue=(retry,), ack=(message.id,)))
                return Decision(outcome="retrying")
        return self.apply(
            CallbacksRan(record.id, error=error),
            ack=(message.id,),
            preloaded={(ACTION, record.id): record},
        )
