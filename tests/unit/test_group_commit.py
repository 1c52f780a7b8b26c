"""Group commit: the outcomes of step bodies a worker thread runs back to back are
committed together (``StepBodiesRan``, ``RunGroup``), with exactly the outcome of
committing them one by one -- in fewer commits."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest

from stepkernel import ActionStatus, App, Registry
from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.domain.errors import (
    ConflictError,
    CorruptRecordError,
    MissingRecordsError,
    StoreUnavailableError,
)
from stepkernel.domain.events import StepBodiesRan, StepBodyRaised, StepBodyRan
from stepkernel.domain.kernel import decide, keys_for
from stepkernel.domain.records import ACTION, ActionRecord, ErrorInfo, Record, RecordKey, key_of
from stepkernel.domain.replay import decode_entry, encode_entry, replay
from stepkernel.domain.view import View
from stepkernel.ports.store import Commit, Delivery, WorkflowStore
from stepkernel.runtime.engine import RanBody
from stepkernel.runtime.grouping import Failed, RunGroup
from stepkernel.runtime.policy import RetryPolicy
from stepkernel.runtime.prefetch import BatchRecords
from stepkernel.testing.backdoors import SqlBackdoors
from stepkernel.testing.history import record_history
from stepkernel.testing.proxy import StoreProxy


class Box:
    def __init__(self, id: int) -> None:
        self.id = id


RAN: list[str] = []
FAIL: set[int] = set()
FLAKY: set[int] = set()


class Broken(Exception):
    pass


def _leaf(step: Any, box: Box) -> None:
    RAN.append(step.action_id)
    if box.id in FAIL:
        raise Broken(f"box {box.id}")
    if box.id in FLAKY:
        FLAKY.discard(box.id)
        raise RuntimeError("flaky")


def _fan(step: Any, box: Box) -> None:
    step.on([Box(box.id * 100 + i) for i in range(20)], "leaf")


def registry() -> Registry:
    reg = Registry()
    reg.register_actor(Box, key=lambda b: b.id, load=lambda k: Box(int(k)))
    reg.action(Box, "fan", steps=[_fan, lambda step, box: None])
    reg.action(Box, "leaf", steps=[_leaf])
    return reg


@pytest.fixture(autouse=True)
def _reset() -> None:
    RAN.clear()
    FAIL.clear()
    FLAKY.clear()


def _sqlite(path: Path) -> WorkflowStore:
    from stepkernel.adapters.sql.store import SqlWorkflowStore, sqlite_engine

    return SqlWorkflowStore(sqlite_engine(path / "db.sqlite"))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> WorkflowStore:
    return InMemoryWorkflowStore() if request.param == "memory" else _sqlite(tmp_path)


def _app(store: WorkflowStore) -> App:
    ids = itertools.count(1)
    return App(
        registry(),
        store,
        new_id=lambda: f"r{next(ids)}",  # the same ids in every app: trees compare
        handled=(Broken,),
        retry=RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.01, jitter=0.0),
    )


def _fanned_out(app: App, box: int = 1) -> tuple[str, list[Delivery]]:
    """Submit a fan-out root, run its first step; its 20 children's runs, leased."""
    root = app.invoke_later(Box(box), "fan").id
    assert root is not None
    [first] = app.store.lease(worker="w", limit=10, lease_seconds=60)
    app.engine.handle(first)
    return root, app.store.lease(worker="w", limit=100, lease_seconds=60)


def _run_all(app: App, *, limit: int = 100) -> None:
    """Handle every message, one at a time, until nothing is queued (waiting for the
    retries scheduled meanwhile: they are due within 10 ms)."""
    deadline = time.monotonic() + 10
    while app.store.queued() and time.monotonic() < deadline:
        for delivery in app.store.lease(worker="w", limit=limit, lease_seconds=60):
            app.engine.handle(delivery)
        time.sleep(0.002)


def _state(app: App, root: str) -> list[tuple[str | None, str, tuple[str, ...]]]:
    """The tree's outcome, without times, versions or digests."""
    return [
        (a.id, a.status.value, tuple(s.status.value for s in a.steps))
        for a in app.tree(root).walk()
    ]


class CountingStore(StoreProxy):
    """Counts the commits that go through; fails the next *fail* with
    StoreUnavailableError."""

    def __init__(self, inner: WorkflowStore) -> None:
        super().__init__(inner)
        self.commits = 0
        self.fail = 0

    def commit(self, commit: Commit) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailableError("injected: connection lost")
        super().commit(commit)
        self.commits += 1  # commits that went through


# -- the kernel ----------------------------------------------------------------------------


def _ran_bodies(app: App, batch: list[Delivery]) -> list[RanBody]:
    ran = [app.engine.run_step_body(d) for d in batch]
    assert all(r is not None for r in ran)
    return [r for r in ran if r is not None]


def _fold(
    view: dict[RecordKey, Record | None], events: Iterable[Any], now: float
) -> dict[Any, Any]:
    state = dict(view)
    for event in events:
        decision = decide(View(records=state), event, now)
        for record in decision.writes:
            state[key_of(record)] = record
        for tomb in decision.deletes:
            state[tomb.key] = None
    return state


def _plain(record: Record | None) -> Any:
    """A record's state, without version and digest chain."""
    if record is None:
        return None
    return {
        a.name: getattr(record, a.name)
        for a in attrs.fields(type(record))
        if a.init and not a.kw_only
    }


def test_a_group_decides_like_its_members_one_by_one() -> None:
    """Deciding the twenty siblings' outcomes as one ``StepBodiesRan`` leaves every record
    in the same state as deciding them one after the other; the shared parent is
    written once (one version more), and each record names the member that changed it
    last."""
    app = _app(InMemoryWorkflowStore())
    root, batch = _fanned_out(app)
    events = [r.event for r in _ran_bodies(app, batch)]
    group = StepBodiesRan(tuple(events))
    keys = [*keys_for(group), (ACTION, root)]
    view = app.store.load(keys)
    for item in batch:  # what each last step may touch: its lane
        view.update(app.store.load([k for k in item.message.preload if k not in view]))
    now = 1_000.0
    decision = decide(View(records=view), group, now)
    assert decision.outcome == "applied"
    grouped = dict(view)
    for record in decision.writes:
        grouped[key_of(record)] = record
    for tomb in decision.deletes:
        grouped[tomb.key] = None
    one_by_one = _fold(view, events, now)
    assert {k: _plain(v) for k, v in grouped.items()} == {
        k: _plain(v) for k, v in one_by_one.items()
    }
    parents = [r for r in decision.writes if key_of(r) == (ACTION, root)]
    assert len(parents) == 1
    before = view[(ACTION, root)]
    assert before is not None
    assert parents[0].version == before.version + 1
    assert parents[0].last_event == events[-1].event_id  # the last sibling settled it
    for event in events:
        child = next(r for r in decision.writes if key_of(r) == (ACTION, event.action_id))
        assert child.last_event == event.event_id


def test_a_group_of_stale_outcomes_changes_nothing() -> None:
    """A group whose every member no longer applies is ``stale`` and writes nothing."""
    app = _app(InMemoryWorkflowStore())
    _root, batch = _fanned_out(app)
    events = [r.event for r in _ran_bodies(app, batch[:3])]
    view = app.store.load(keys_for(StepBodiesRan(tuple(events))))
    for event in events:  # every action moved on: cancelled meanwhile
        app.cancel(event.action_id)
        view.update(app.store.load([(ACTION, event.action_id)]))
    decision = decide(View(records=view), StepBodiesRan(tuple(events)), 1_000.0)
    assert decision.outcome == "stale"
    assert decision.empty


def test_a_group_short_of_records_asks_for_every_members_at_once() -> None:
    """Decided on a view without the children's lanes (which their last steps release),
    a group's ``MissingRecordsError`` names the lanes of all its members, not only the
    first one's: one more load, not one per member."""
    app = _app(InMemoryWorkflowStore())
    root, batch = _fanned_out(app)
    events = [r.event for r in _ran_bodies(app, batch)]
    group = StepBodiesRan(tuple(events))
    view = app.store.load([*keys_for(group), (ACTION, root)])
    with pytest.raises(MissingRecordsError) as raised:
        decide(View(records=view), group, 1_000.0)
    lanes = {k for k in raised.value.keys if k[0] == "lane"}
    assert len(lanes) == 20


def test_loading_what_the_kernel_asks_for_is_not_a_conflict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Engine.apply`` loads records for as many rounds as the kernel asks (each names
    records not loaded yet) without counting them against the conflict limit; a kernel
    asking again for a record it was given raises instead of looping."""
    app = _app(InMemoryWorkflowStore())
    _root, batch = _fanned_out(app)
    events = [r.event for r in _ran_bodies(app, batch)]
    children = app.store.load([(ACTION, e.action_id) for e in events]).values()
    lane_keys = [("lane", c.concurrency_key) for c in children if isinstance(c, ActionRecord)]
    asked = [0]

    def one_key_at_a_time(view: View, event: Any, now: float) -> Any:
        lanes = [k for k in lane_keys if k not in view.records]
        if lanes:
            asked[0] += 1
            raise MissingRecordsError("one more", keys=(lanes[0],))
        return decide(view, event, now)

    monkeypatch.setattr("stepkernel.runtime.engine.decide", one_key_at_a_time)
    app.engine.apply(StepBodiesRan(tuple(events)), ack=[d.message.id for d in batch])
    assert asked[0] == 20
    assert app.engine.conflicts == 0
    assert all(app.get(e.action_id).status is ActionStatus.SUCCEEDED for e in events)

    def asks_for_what_it_has(view: View, event: Any, now: float) -> Any:
        raise MissingRecordsError("again", keys=(next(iter(view.records)),))

    monkeypatch.setattr("stepkernel.runtime.engine.decide", asks_for_what_it_has)
    with pytest.raises(MissingRecordsError):
        app.engine.apply(StepBodyRan(events[0].action_id, 0, 0))


def test_a_group_refuses_an_empty_or_repeated_or_foreign_member() -> None:
    """``StepBodiesRan`` holds at least one outcome, at most one per action, and only
    step body outcomes: anything else is a typed error at construction."""
    ran = StepBodyRan("a", 0, 0)
    with pytest.raises(ValueError, match="at least one"):
        StepBodiesRan(())
    with pytest.raises(ValueError, match="one outcome per action"):
        StepBodiesRan((ran, StepBodyRaised("a", 0, 0, error=ErrorInfo.of("E", "x"))))
    with pytest.raises(TypeError, match="body outcomes"):
        StepBodiesRan((ran, "not an event"))


def test_a_group_asks_for_the_keys_of_all_its_members_once() -> None:
    """``keys_for`` a group is the union of its members' keys, in order, without
    repeats; its id differs from any other group's."""
    group = StepBodiesRan((StepBodyRan("a", 0, 0), StepBodyRan("b", 1, 0)))
    assert keys_for(group) == [(ACTION, "a"), (ACTION, "b")]
    assert group.event_id.startswith("group:body:a:0:0+1:")
    other = StepBodiesRan((StepBodyRan("a", 0, 0), StepBodyRan("c", 1, 0)))
    assert other.event_id != group.event_id


def test_a_recorded_group_commit_replays_and_round_trips() -> None:
    """A history holding a group commit replays to the same digests, also after its
    entries went through their JSON form (golden histories)."""
    app = _app(InMemoryWorkflowStore())
    entries = record_history(app)
    root, batch = _fanned_out(app)
    group = RunGroup(app.engine)
    for delivery in batch:
        group.add(delivery)
    group.flush()
    _run_all(app)
    assert app.get(root).status is ActionStatus.SUCCEEDED
    assert any(isinstance(e.event, StepBodiesRan) for e in entries)
    replay(entries)
    replay([decode_entry(encode_entry(e)) for e in entries])


# -- the engine and RunGroup ---------------------------------------------------------------


def test_twenty_siblings_commit_once_with_the_same_outcome(store: WorkflowStore) -> None:
    """Twenty sibling runs through one ``RunGroup`` cost one commit (not twenty), every
    message is acknowledged, and the tree ends exactly as when committed one by one."""
    counting = CountingStore(store)
    grouped = _app(counting)
    root, batch = _fanned_out(grouped)
    counting.commits = 0
    group = RunGroup(grouped.engine)
    for delivery in batch:
        group.add(delivery)
    assert len(group) == 20
    assert counting.commits == 0
    group.flush()
    assert counting.commits == 1
    assert not [
        m
        for m in counting.queued()
        if m.kind.value == "run" and m.step == 0 and m.action_id != root
    ]
    _run_all(grouped)

    alone = _app(InMemoryWorkflowStore())
    other, leased = _fanned_out(alone)
    alone.store.release([d.message.id for d in leased], worker="w")
    _run_all(alone)
    assert _state(grouped, root) == _state(alone, other)
    assert grouped.get(root).status is ActionStatus.SUCCEEDED
    assert sorted(RAN) == sorted([*set(RAN), *set(RAN)])  # each body ran once in each app


def test_a_group_commits_when_full(store: WorkflowStore) -> None:
    """A group holding ``limit`` outcomes commits them at once: 20 siblings, 5 at a time,
    take 4 commits."""
    counting = CountingStore(store)
    app = _app(counting)
    root, batch = _fanned_out(app)
    counting.commits = 0
    group = RunGroup(app.engine, limit=5)
    for delivery in batch:
        group.add(delivery)
    assert counting.commits == 4
    assert not len(group)
    _run_all(app)
    assert app.get(root).status is ActionStatus.SUCCEEDED


def test_a_group_commits_when_its_oldest_outcome_has_waited_the_window() -> None:
    """Once the oldest held outcome is ``window`` seconds old, the next body's outcome
    is committed with the rest instead of waiting for the group to fill."""
    now = [0.0]
    counting = CountingStore(InMemoryWorkflowStore())
    app = _app(counting)
    _root, batch = _fanned_out(app)
    counting.commits = 0
    group = RunGroup(app.engine, window=0.5, clock=lambda: now[0])
    group.add(batch[0])
    now[0] = 0.4
    group.add(batch[1])
    assert counting.commits == 0
    assert len(group) == 2
    now[0] = 0.5
    group.add(batch[2])
    assert counting.commits == 1
    assert not len(group)


def test_a_stale_run_is_acknowledged_not_held() -> None:
    """A run message for a step that moved on (here: its action was cancelled) is
    acknowledged at once; its body does not run and the group does not hold it."""
    app = _app(InMemoryWorkflowStore())
    _root, batch = _fanned_out(app)
    victim = batch[0].message.action_id
    app.cancel(victim)
    group = RunGroup(app.engine)
    group.add(batch[0])
    assert not len(group)
    assert victim not in RAN
    assert batch[0].message.id not in {m.id for m in app.store.queued()}


def test_a_second_run_for_an_action_commits_the_group_first() -> None:
    """One outcome per action and commit: a run message for an action the group already
    holds commits the group before its body runs (here the duplicate is then stale)."""
    counting = CountingStore(InMemoryWorkflowStore())
    app = _app(counting)
    _root, batch = _fanned_out(app)
    counting.commits = 0
    group = RunGroup(app.engine)
    group.add(batch[0])
    group.add(batch[1])
    group.add(batch[0])  # the same message delivered twice
    assert counting.commits == 1
    assert not len(group)
    assert RAN.count(batch[0].message.action_id) == 1


def test_failures_and_retries_in_a_group_end_as_one_by_one(store: WorkflowStore) -> None:
    """A member whose body fails (handled error) fails the parent step, and one that
    raises is scheduled for a retry; the later siblings settle into the finished parent
    as stale -- all as when committed one by one."""

    def outcome(app: App) -> tuple[list[Any], str]:
        root, batch = _fanned_out(app, 7)
        group = RunGroup(app.engine)
        for delivery in batch:
            group.add(delivery)
        group.flush()
        _run_all(app)
        return _state(app, root), app.get(root).status.value

    FAIL.add(703)
    FLAKY.add(705)
    grouped = outcome(_app(store))
    FAIL.add(703)
    FLAKY.add(705)
    RAN.clear()

    alone = _app(InMemoryWorkflowStore())
    root, leased = _fanned_out(alone, 7)
    alone.store.release([d.message.id for d in leased], worker="w")
    _run_all(alone)
    assert grouped == (_state(alone, root), "failed")


def test_an_unavailable_store_loses_the_group_not_the_work() -> None:
    """A group commit that fails (store unavailable) commits nothing and raises nothing:
    ``on_flush`` gets every message as failed, with the error; the messages stay
    queued, are delivered again, their bodies run again and the tree finishes."""
    counting = CountingStore(InMemoryWorkflowStore())
    app = _app(counting)
    root, batch = _fanned_out(app)
    reports: list[tuple[list[Delivery], Failed]] = []
    group = RunGroup(app.engine, on_flush=lambda done, failed: reports.append((done, failed)))
    for delivery in batch[:5]:
        group.add(delivery)
    counting.fail = 1
    group.flush()
    assert not len(group)
    [(done, failed)] = reports
    assert done == []
    assert [d for d, _ in failed] == batch[:5]
    assert all(isinstance(exc, StoreUnavailableError) for _, exc in failed)
    held = {d.message.id for d in batch[:5]}
    assert held <= {m.id for m in app.store.queued()}
    assert all(app.get(d.message.action_id).status is ActionStatus.PERFORMING for d in batch[:5])
    app.store.release([d.message.id for d in batch], worker="w")
    _run_all(app)
    assert app.get(root).status is ActionStatus.SUCCEEDED
    assert len(RAN) == 25  # the five lost outcomes ran again


class GroupRefusingStore(CountingStore):
    """Every commit acknowledging more than one message conflicts (a group can never
    commit together); commits of one outcome go through."""

    def commit(self, commit: Commit) -> None:
        if len(commit.ack) > 1:
            raise ConflictError("injected: always moved", key=("action", "x"), expected=1, actual=2)
        super().commit(commit)


def test_a_group_that_cannot_commit_together_commits_one_at_a_time() -> None:
    """When the group's commit gives up (here: it conflicts every time), its outcomes
    are committed one at a time, so one bad outcome does not sink its siblings; every
    child succeeds and ``on_flush`` reports them all done."""
    store = GroupRefusingStore(InMemoryWorkflowStore())
    app = _app(store)
    root, batch = _fanned_out(app)
    reports: list[tuple[list[Delivery], Failed]] = []
    group = RunGroup(app.engine, on_flush=lambda done, failed: reports.append((done, failed)))
    for delivery in batch:
        group.add(delivery)
    store.commits = 0
    group.flush()
    [(done, failed)] = reports
    assert (len(done), failed) == (20, [])
    assert store.commits == 20
    assert group.commits == 1
    _run_all(app)
    assert app.get(root).status is ActionStatus.SUCCEEDED


class Leaf:
    def __init__(self, id: int) -> None:
        self.id = id


def test_a_large_group_needing_many_records_commits_in_a_few_loads() -> None:
    """Forty siblings, each on a lane where an action with a checksum waits behind it:
    finishing each must start that successor, whose record and achievement the first
    load did not bring.  The group asks for all of them at once (a few loads, no false
    conflict) instead of one round trip per member."""
    reg = Registry()
    reg.register_actor(Leaf, key=lambda b: b.id, load=lambda k: Leaf(int(k)))
    reg.action(
        Leaf,
        "leaf",
        steps=[lambda step, leaf, tag: None],
        concurrency_key=lambda leaf, tag: f"L{leaf.id}",
        checksum=lambda leaf, tag: tag,
        checksum_key=lambda leaf, tag: f"K{leaf.id}{tag}",
    )
    for tag in "ab":
        reg.action(
            Leaf,
            f"fan_{tag}",
            steps=[lambda step, leaf, t=tag: step.on([Leaf(i) for i in range(40)], "leaf", t)],
        )
    loads = [0]

    class Counting(InMemoryWorkflowStore):
        def load(self, keys: Iterable[RecordKey]) -> dict[RecordKey, Record | None]:
            loads[0] += 1
            return super().load(list(keys))

    store = Counting()
    app = App(reg, store)
    first = app.invoke_later(Leaf(1000), "fan_a").id
    app.invoke_later(Leaf(2000), "fan_b")
    for delivery in store.lease(worker="w", limit=2, lease_seconds=60):
        app.engine.handle(delivery)  # both fan out: fan_b's leaves queue behind fan_a's
    batch = store.lease(worker="w", limit=40, lease_seconds=60)
    assert all(d.message.action_id.startswith(str(first)) for d in batch)
    known = BatchRecords(store)
    known.prefetch(d.message for d in batch)
    group = RunGroup(app.engine, known, limit=40, window=math.inf)
    for delivery in batch:
        group.add(delivery)
    loads[0] = 0
    group.flush()
    assert loads[0] <= 3
    assert app.engine.conflicts == 0
    assert app.get(str(first)).status is ActionStatus.SUCCEEDED


def test_a_record_that_does_not_decode_quarantines_one_member_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a record the group needs does not decode, ``commit_bodies`` commits nothing
    and raises; the ``RunGroup`` then commits the outcomes one at a time: that action is
    failed with ``CorruptRecordError`` (its message acknowledged), every other member
    commits, and ``on_flush`` reports all of them done."""
    store = _sqlite(tmp_path)
    app = _app(store)
    root, batch = _fanned_out(app)
    ran = _ran_bodies(app, batch)
    victim = ran[5].event.action_id
    SqlBackdoors().corrupt(store, (ACTION, victim))
    loaded = {k: v for k, v in ran[5].loaded.items() if k != (ACTION, victim)}
    ran[5] = attrs.evolve(ran[5], loaded=loaded)  # so the commit must read it
    with pytest.raises(CorruptRecordError):
        app.engine.commit_bodies(ran)
    assert {d.message.id for d in batch} <= {m.id for m in store.queued()}  # nothing committed
    by_message = {item.delivery.message.id: item for item in ran}
    monkeypatch.setattr(
        app.engine, "run_step_body", lambda delivery, known=None: by_message[delivery.message.id]
    )
    reports: list[tuple[list[Delivery], Failed]] = []
    group = RunGroup(app.engine, on_flush=lambda done, failed: reports.append((done, failed)))
    for delivery in batch:
        group.add(delivery)
    group.flush()
    [(done, failed_members)] = reports
    assert (len(done), failed_members) == (20, [])
    failed = store.load([(ACTION, victim)])[(ACTION, victim)]
    assert isinstance(failed, ActionRecord)
    assert failed.status is ActionStatus.FAILED
    assert failed.error is not None
    assert failed.error.type == "CorruptRecordError"
    others = [r.event.action_id for r in ran if r.event.action_id != victim]
    assert all(app.get(a).status is ActionStatus.SUCCEEDED for a in others)
    assert not {d.message.id for d in batch} & {m.id for m in store.queued()}
    assert app.get(root).status is ActionStatus.PERFORMING  # waits on the victim


# -- the worker ------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [1, 32])
def test_a_worker_commits_sibling_runs_in_groups(store: WorkflowStore, group: int) -> None:
    """Through a real ``Worker``: with grouping (the default) ten fan-outs of twenty take
    far fewer commits than children; with ``group=1``, one commit per child; the trees
    end the same."""
    counting = CountingStore(store)
    app = _app(counting)
    roots = [app.invoke_later(Box(i), "fan").id for i in range(1, 11)]
    counting.commits = 0
    worker = app.worker(threads=1, batch=32, poll=0.005, recover_every=None, group=group)
    with worker:
        assert worker.wait_idle(timeout=60, settle=0.02)
    assert all(app.get(r).status is ActionStatus.SUCCEEDED for r in roots if r)
    children = 200
    if group == 1:
        assert counting.commits >= children
    else:
        assert counting.commits <= children // 4
    assert worker.errors == 0
    assert len(RAN) == len(set(RAN)) == children


def test_stopping_a_worker_commits_what_its_group_holds(store: WorkflowStore) -> None:
    """``Worker.stop()`` during a batch commits the outcomes already run before giving
    back the leases of the rest: no body that ran is lost or run again, and the rest
    are leasable at once."""
    app = _app(store)
    root, _ = _fanned_out(app)
    app.store.release([m.id for m in app.store.queued()], worker="w")
    worker = app.worker(threads=1, batch=32, poll=0.005, recover_every=None, group=32)
    stopping: list[threading.Thread] = []
    original = app.engine.run_body

    def run_body(record: ActionRecord) -> Any:
        event = original(record)
        if len(RAN) == 5 and not stopping:
            stopper = threading.Thread(target=worker.stop)
            stopper.start()
            stopping.append(stopper)  # only once started: the test joins it
            stopper.join(0.1)  # stop() is now waiting for this thread
        return event

    app.engine.run_body = run_body  # type: ignore[method-assign]
    worker.start()
    deadline = time.monotonic() + 10
    while not stopping and time.monotonic() < deadline:
        time.sleep(0.005)
    stopping[0].join(10)
    assert len(RAN) == 5
    done = [a for a in app.tree(root).walk() if a.id != root]
    assert sorted(str(a.id) for a in done if a.status is ActionStatus.SUCCEEDED) == sorted(RAN)
    assert len(app.store.lease(worker="next", limit=100, lease_seconds=60)) == 15


def test_raised_outcomes_keep_the_retry_in_a_group() -> None:
    """A member that raised (not handled) is committed with its retry scheduled; the
    retry runs later and the child succeeds."""
    FLAKY.add(102)
    app = _app(InMemoryWorkflowStore())
    root, batch = _fanned_out(app)
    ran = _ran_bodies(app, batch)
    raised = [r for r in ran if isinstance(r.event, StepBodyRaised)]
    assert len(raised) == 1
    app.engine.commit_bodies(ran)
    flaky = raised[0].event.action_id
    assert app.get(flaky).status is ActionStatus.PERFORMING
    assert any(m.action_id == flaky and m.attempt == 1 for m in app.store.queued())
    _run_all(app)
    assert app.get(flaky).status is ActionStatus.SUCCEEDED
    assert app.get(root).status is ActionStatus.SUCCEEDED


def test_a_slow_body_does_not_hold_back_the_outcomes_before_it() -> None:
    """A quick step's outcome, held while the same worker thread runs a slow body next,
    is committed once it has waited ``group_window`` (by the worker's flusher thread),
    not when the slow body returns; the worker counts each message once it commits."""
    release = threading.Event()
    reg = Registry()
    reg.register_actor(Leaf, key=lambda b: b.id, load=lambda k: Leaf(int(k)))
    reg.action(Leaf, "quick", steps=[lambda step, leaf: None])
    reg.action(Leaf, "slow", steps=[lambda step, leaf: release.wait(10)])
    app = App(reg, InMemoryWorkflowStore())
    quick = app.invoke_later(Leaf(1), "quick").id
    slow = app.invoke_later(Leaf(2), "slow").id
    worker = app.worker(threads=1, batch=32, group=32, group_window=0.05, recover_every=None)
    with worker:
        deadline = time.monotonic() + 5
        while app.get(str(quick)).status is not ActionStatus.SUCCEEDED:
            assert time.monotonic() < deadline, "the quick outcome waited for the slow body"
            time.sleep(0.01)
        assert app.get(str(slow)).status is ActionStatus.PERFORMING  # its body still runs
        assert worker.processed == 1
        release.set()
        assert worker.wait_idle(timeout=10, settle=0.02)
    assert app.get(str(slow)).status is ActionStatus.SUCCEEDED
    assert (worker.processed, worker.errors) == (2, 0)


def test_a_worker_gives_back_the_leases_of_outcomes_it_could_not_commit() -> None:
    """When a group's commit fails (store unavailable), the worker counts its messages as
    errors and releases their leases, so they run again at once, not after the lease
    (60 s here) runs out; the tree still finishes."""
    counting = CountingStore(InMemoryWorkflowStore())
    app = _app(counting)
    root = app.invoke_later(Box(9), "fan").id
    counting.fail = 0
    worker = app.worker(threads=1, batch=32, poll=0.005, recover_every=None, lease_seconds=60)
    original = app.engine.commit_bodies
    failed: list[bool] = []

    def failing_once(ran: Any, known: Any = None) -> Any:
        if len(ran) > 1 and not failed:  # the first group's commit: store unavailable
            failed.append(True)
            counting.fail = 1
        return original(ran, known)

    app.engine.commit_bodies = failing_once  # type: ignore[method-assign]
    with worker:
        assert worker.wait_idle(timeout=10, settle=0.02)
    assert app.get(str(root)).status is ActionStatus.SUCCEEDED
    assert worker.errors == 20
    assert worker.processed == 1 + 20 + 1  # the fan-out, the children again, the end


def test_what_flush_stale_committed_reaches_the_batch_records() -> None:
    """After another thread's ``flush_stale`` committed an outcome, the loop thread's
    batch records learn of it before the next body runs: the same message delivered
    again is seen as stale (its body does not run twice, no conflict is paid)."""
    app = _app(InMemoryWorkflowStore())
    _root, batch = _fanned_out(app)
    known = BatchRecords(app.store)
    known.prefetch(d.message for d in batch)
    now = [0.0]
    group = RunGroup(app.engine, known, window=0.05, clock=lambda: now[0])
    group.add(batch[0])
    group.add(batch[1])
    now[0] = 1.0
    stale = threading.Thread(target=group.flush_stale)
    stale.start()
    stale.join(5)
    assert not len(group)
    group.add(batch[0])  # delivered again
    group.flush()
    assert RAN.count(batch[0].message.action_id) == 1
    assert app.engine.conflicts == 0


def test_outcomes_being_committed_still_count_as_held() -> None:
    """While ``flush_stale`` commits (here: held up), its outcomes still count as held
    (``len``, ``message_ids``: what the heartbeat extends and ``wait_idle`` waits for),
    and the loop thread's ``flush`` waits for that commit instead of passing it."""
    app = _app(InMemoryWorkflowStore())
    _root, batch = _fanned_out(app)
    now = [0.0]
    group = RunGroup(app.engine, window=0.05, clock=lambda: now[0])
    group.add(batch[0])
    entered, gate = threading.Event(), threading.Event()
    original = app.engine.commit_bodies

    def held_up(ran: Any, known: Any = None) -> Any:
        if threading.current_thread().name == "flusher":
            entered.set()
            gate.wait(5)
        return original(ran, known)

    app.engine.commit_bodies = held_up  # type: ignore[method-assign]
    now[0] = 1.0
    flusher = threading.Thread(target=group.flush_stale, name="flusher")
    flusher.start()
    assert entered.wait(5)
    assert len(group) == 1
    assert group.message_ids == [batch[0].message.id]
    flushed = threading.Thread(target=group.flush)
    flushed.start()
    flushed.join(0.2)
    assert flushed.is_alive()  # waits for the flusher's commit
    gate.set()
    flusher.join(5)
    flushed.join(5)
    assert not len(group)
    assert app.get(batch[0].message.action_id).status is ActionStatus.SUCCEEDED
