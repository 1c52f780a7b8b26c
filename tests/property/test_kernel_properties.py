"""``decide`` is pure, ignores what no longer applies, and decides a group of body
outcomes as its members one after the other.

Realistic views come from driving small workflows through the in-memory app one message
at a time; the kernel is then asked about events against a snapshot of every record.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from stepkernel import ActionStatus, Registry, RetryPolicy
from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.errors import MissingRecordsError
from stepkernel.domain.events import (
    Event,
    MessageDelivered,
    StepBodiesRan,
    StepBodyRaised,
    StepBodyRan,
)
from stepkernel.domain.kernel import decide, keys_for
from stepkernel.domain.messages import MessageKind
from stepkernel.domain.records import ActionRecord, ErrorInfo, Record, RecordKey, key_of
from stepkernel.domain.status import StepStatus
from stepkernel.domain.view import Decision, View
from stepkernel.ports.store import Delivery
from stepkernel.runtime.app import App
from stepkernel.testing import FakeClock, memory_app


@attrs.frozen
class Node:
    id: int

    def ping(self) -> None:
        return None


@attrs.frozen
class Shape:
    """A two-level workflow: ``deploy`` fans out pings and waits, over one or two steps;
    ``flaky`` makes its first step raise on attempt 0 (a retry)."""

    pings: int
    waits: int
    steps: int
    flaky: bool
    timeout: int | None


def shapes_with(pings: st.SearchStrategy[int]) -> st.SearchStrategy[Shape]:
    return st.builds(
        Shape,
        pings=pings,
        waits=st.integers(0, 2),
        steps=st.integers(1, 2),
        flaky=st.booleans(),
        timeout=st.none() | st.integers(3, 30),
    )


shapes = shapes_with(st.integers(0, 3))


def build_app(shape: Shape) -> App:
    """A memory app whose root action ``deploy`` on ``Node(0)`` follows *shape*."""
    reg = Registry()
    reg.register_actor(Node, key=lambda n: n.id, load=lambda key: Node(int(key)))
    deploy = reg.action(Node, "deploy", timeout=shape.timeout)
    reg.action(Node, "ping")

    def fan(step: Any, node: Node) -> None:
        if shape.flaky and step.attempt == 0:
            raise RuntimeError("first attempt fails")
        step.on([Node(node.id + i) for i in range(shape.pings)], "ping")
        for n in range(shape.waits):
            step.wait(n + 1)

    def again(step: Any, node: Node) -> None:
        step.do("ping")

    deploy.step(fan)
    if shape.steps > 1:
        deploy.step(again)
    app = memory_app(reg, retry=RetryPolicy(attempts=3, initial_delay=1, jitter=0))
    app.invoke_later(Node(0), "deploy")
    return app


def stored(app: App) -> dict[RecordKey, Record]:
    """Every record in *app*'s in-memory store."""
    assert isinstance(app.store, InMemoryWorkflowStore)
    return app.store.all_records()


def next_delivery(app: App) -> Delivery | None:
    """Lease one due message, moving the fake clock to the next timer when idle."""
    clock = app.store.clock
    assert isinstance(clock, FakeClock)
    while True:
        batch = app.store.lease(worker="t", limit=1, lease_seconds=app.lease_seconds)
        if batch:
            return batch[0]
        due = app.store.next_due()
        if due is None:
            return None
        clock.advance_to(due)


def full_view(app: App, event: Event) -> dict[RecordKey, Record | None]:
    """Every stored record, plus ``None`` for each absent key *event* asks about."""
    records: dict[RecordKey, Record | None] = dict(stored(app))
    wanted = [k for k in keys_for(event) if k not in records]
    records.update(dict.fromkeys(wanted))
    while True:
        try:
            decide(View(records=dict(records)), event, app.store.now())
        except MissingRecordsError as need:
            records.update(dict.fromkeys(k for k in need.keys if k not in records))
            continue
        return records


def run(app: App, messages: int) -> None:
    for _ in range(messages):
        delivery = next_delivery(app)
        if delivery is None:
            return
        app.engine.handle(delivery)


def candidate_events(app: App) -> list[Event]:
    """Events that could arrive now: every queued settle/timeout/cancel message, and a
    body outcome for every pending step (with no children)."""
    events: list[Event] = [
        MessageDelivered(m)
        for m in app.store.queued()
        if m.kind in (MessageKind.SETTLE, MessageKind.TIMEOUT, MessageKind.CANCEL)
    ]
    for record in stored(app).values():
        if isinstance(record, ActionRecord) and record.current_step is not None:
            step = record.current_step
            events.append(StepBodyRan(record.id, step.index, step.attempt))
    return events


@given(shapes, st.integers(0, 25), st.data())
def test_decide_is_deterministic(shape: Shape, messages: int, data: st.DataObject) -> None:
    """decide returns equal decisions for the same (view, event, now) asked twice."""
    app = build_app(shape)
    run(app, messages)
    events = candidate_events(app)
    if not events:
        return
    event = data.draw(st.sampled_from(events), label="event")
    records = full_view(app, event)
    now = app.store.now()
    first = decide(View(records=records), event, now)
    second = decide(View(records=records), event, now)
    assert first == second


@given(shapes, st.integers(0, 25), st.data())
def test_decide_does_not_mutate_the_view(shape: Shape, messages: int, data: st.DataObject) -> None:
    """decide leaves the view's mapping and every record in it as they were."""
    app = build_app(shape)
    run(app, messages)
    events = candidate_events(app)
    if not events:
        return
    event = data.draw(st.sampled_from(events), label="event")
    records = full_view(app, event)
    before = dict(records)
    deep = copy.deepcopy(records)
    decide(View(records=records), event, app.store.now())
    assert records == before
    assert all(records[k] is before[k] for k in before)
    assert records == deep


def _apply_and_redeliver(app: App, delivery: Delivery) -> Decision:
    """Handle *delivery*, then decide the same message again against the new state."""
    app.engine.handle(delivery)
    event = MessageDelivered(delivery.message)
    return decide(View(records=full_view(app, event)), event, app.store.now())


@given(shapes)
def test_decide_settle_delivered_twice_is_empty(shape: Shape) -> None:
    """decide ignores a settle (or timeout, or cancel) message that was already applied:
    delivering it again gives an empty decision."""
    app = build_app(shape)
    while (delivery := next_delivery(app)) is not None:
        if delivery.message.kind in (MessageKind.RUN, MessageKind.AFTER):
            app.engine.handle(delivery)
            continue
        again = _apply_and_redeliver(app, delivery)
        assert again.empty, (delivery.message, again)
        assert again.outcome in ("stale", "duplicate")


@given(shapes, st.integers(0, 25))
def test_decide_step_body_ran_for_an_old_attempt_is_empty(shape: Shape, messages: int) -> None:
    """decide ignores StepBodyRan for an attempt or a step the action has moved past."""
    app = build_app(shape)
    run(app, messages)
    stale: list[StepBodyRan] = []
    for record in stored(app).values():
        if not isinstance(record, ActionRecord):
            continue
        for step in record.steps:
            stale.extend(StepBodyRan(record.id, step.index, a) for a in range(step.attempt))
            if step.status is not StepStatus.PENDING or record.status.terminal:
                stale.append(StepBodyRan(record.id, step.index, step.attempt))
    for event in stale:
        decision = decide(View(records=full_view(app, event)), event, app.store.now())
        assert decision.empty, event
        assert decision.outcome == "stale"


@given(shapes)
def test_decide_run_to_completion_finishes_the_root(shape: Shape) -> None:
    """Driven message by message, every generated workflow ends with its root terminal
    and the queue empty (sanity check of the driver the other properties use)."""
    app = build_app(shape)
    run(app, 1_000)
    assert app.store.queued() == []
    roots = [r for r in stored(app).values() if isinstance(r, ActionRecord) and r.parent is None]
    assert [r.status for r in roots] in (
        [ActionStatus.SUCCEEDED],
        [ActionStatus.TIMED_OUT],
    )


def _state_of(record: Record | None) -> Any:
    """A record's state: its fields without version and digest chain."""
    if record is None:
        return None
    return tuple(
        getattr(record, a.name) for a in attrs.fields(type(record)) if a.init and not a.kw_only
    )


def _decided(records: dict[RecordKey, Record | None], event: Event, now: float) -> Decision:
    while True:
        try:
            return decide(View(records=dict(records)), event, now)
        except MissingRecordsError as need:
            records.update(dict.fromkeys(k for k in need.keys if k not in records))


def _pending_step(records: dict[RecordKey, Record], event: StepBodyRan) -> bool:
    record = records.get(("action", event.action_id))
    step = record.current_step if isinstance(record, ActionRecord) else None
    return step is not None and step.status is StepStatus.PENDING


fan_shapes = shapes_with(st.integers(2, 6))
"""Wider fan-outs (caught early: several children pending at once)."""


@settings(max_examples=max(200, settings().max_examples))
@given(fan_shapes, st.integers(1, 8), st.data())
def test_a_group_of_body_outcomes_decides_like_its_members_in_order(
    shape: Shape, messages: int, data: st.DataObject
) -> None:
    """``StepBodiesRan`` of body outcomes for distinct actions (some raising, one maybe
    stale) leaves every record in the state that deciding its members one after the
    other leaves, and sends the same messages."""
    app = build_app(shape)
    run(app, messages)
    outcomes = [e for e in candidate_events(app) if isinstance(e, StepBodyRan)]
    records = stored(app)
    runnable = [e for e in outcomes if _pending_step(records, e)]
    if not runnable:
        return
    chosen = data.draw(
        st.lists(st.sampled_from(runnable), min_size=1, unique_by=lambda e: e.action_id)
    )
    stale = [e for e in outcomes if e.action_id not in {c.action_id for c in chosen}]
    with_stale: bool = data.draw(st.booleans(), label="with a stale member")
    if stale and with_stale:
        chosen.insert(data.draw(st.integers(0, len(chosen))), data.draw(st.sampled_from(stale)))
    members: list[StepBodyRan | StepBodyRaised] = []
    for e in chosen:
        raises: bool = data.draw(st.booleans(), label="raises")
        error = ErrorInfo.of("E", "x")
        members.append(StepBodyRaised(e.action_id, e.step, e.attempt, error=error) if raises else e)
    now = app.store.now()
    view: dict[RecordKey, Record | None] = dict(records)
    group = _decided(view, StepBodiesRan(tuple(members)), now)
    grouped = dict(view)
    for record in group.writes:
        grouped[key_of(record)] = record
    for tomb in group.deletes:
        grouped[tomb.key] = None
    alone = dict(view)
    sent: dict[str, Any] = {}
    for member in members:
        decision = _decided(alone, member, now)
        for record in decision.writes:
            alone[key_of(record)] = record
        for tomb in decision.deletes:
            alone[tomb.key] = None
        sent.update((m.id, m) for m in decision.messages)
    assert {k: _state_of(v) for k, v in grouped.items()} == {
        k: _state_of(v) for k, v in alone.items()
    }
    assert {m.id: m for m in group.messages} == sent
