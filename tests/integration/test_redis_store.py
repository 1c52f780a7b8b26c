"""The Redis store on the shared Redis server: the whole store contract, plus what is
particular to Redis (one script per commit, scripts reloaded after ``SCRIPT FLUSH``, the
epoch marker, key layout, concurrent leasing from separate clients).

Each test gets its own key prefix and deletes its keys afterwards, so tests never see
each other's data and the shared database is left as it was found.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from stepkernel.adapters.memory import InMemoryWorkflowStore
from stepkernel.adapters.redis import RedisDataLostError, RedisWorkflowStore, dead
from stepkernel.adapters.redis.plan import record_value
from stepkernel.adapters.redis.scripts import Script
from stepkernel.domain.errors import (
    ConflictError,
    CorruptRecordError,
    InvalidInputError,
    StoreUnavailableError,
)
from stepkernel.domain.records import ACHIEVEMENT, ACTION, LANE, Tombstone, key_of
from stepkernel.domain.status import ActionStatus
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import ActionQuery, Commit, WorkflowStore
from stepkernel.runtime.app import App
from stepkernel.runtime.registry import Registry
from stepkernel.testing.backdoors import RedisBackdoors
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.contract import WorkflowStoreContract, achievement, action, bump, lane
from stepkernel.testing.contract_support import queued_message
from stepkernel.testing.harness import drain
from stepkernel.wiring import open_store

pytestmark = pytest.mark.integration


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"sktest-{uuid.uuid4().hex[:12]}"


def drop_keys(client: redis.Redis, store: RedisWorkflowStore) -> None:
    """Delete every key of *store* (its prefix) from the server."""
    names = list(client.scan_iter(match=store.keys.pattern(), count=1000))
    for start in range(0, len(names), 500):
        client.delete(*names[start : start + 500])


def snapshot(client: redis.Redis, store: RedisWorkflowStore) -> dict[bytes, bytes | None]:
    """Every key of *store* with its serialized value (``DUMP``): equal snapshots mean
    nothing changed, indexes and queue included."""
    names = sorted(client.scan_iter(match=store.keys.pattern(), count=1000))
    return {name: client.dump(name) for name in names}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the shared server."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def store(client: redis.Redis) -> Iterator[RedisWorkflowStore]:
    """A store under a fresh prefix on a fake clock; its keys are deleted afterwards."""
    made = RedisWorkflowStore(client, prefix=unique_prefix(), clock=FakeClock())
    yield made
    made.close()
    drop_keys(client, made)


class TestRedisStore(RedisBackdoors, WorkflowStoreContract):
    """The Redis adapter meets the store contract."""

    @pytest.fixture(autouse=True)
    def _server(self, client: redis.Redis) -> None:
        self.client = client

    def make_store(self, clock: Clock) -> WorkflowStore:
        return RedisWorkflowStore(self.client, prefix=unique_prefix(), clock=clock)

    def dispose(self, store: WorkflowStore) -> None:
        assert isinstance(store, RedisWorkflowStore)
        store.close()
        drop_keys(self.client, store)


# -- one script per commit, all or nothing ---------------------------------------------------


def test_commit_is_one_round_trip(store: RedisWorkflowStore) -> None:
    """A commit with writes, an ack and an enqueue costs one round trip once the store
    is bound and the script loaded; ``commits`` counts it."""
    store.commit(Commit(writes=[achievement("warm")]))  # binds and loads the script
    before, commits = store.round_trips, store.commits
    first = action("a1")
    store.commit(
        Commit(
            writes=[first, lane("l1")],
            ack=["nothing"],
            enqueue=[queued_message("m1", at=store.now())],
        )
    )
    store.commit(Commit(writes=[bump(first, status=ActionStatus.PERFORMING)]))
    assert store.round_trips - before == 2
    assert store.commits - commits == 2


def test_failed_version_check_changes_no_key(
    store: RedisWorkflowStore, client: redis.Redis
) -> None:
    """When any version check of a commit fails, no key under the prefix changes: no
    record, index entry, message or acknowledgement is applied."""
    clock = store.clock
    old = action("a1", status=ActionStatus.PERFORMING)
    doomed = lane("doomed")
    store.commit(
        Commit(
            writes=[old, doomed, achievement("k1")],
            enqueue=[queued_message("kept", at=clock.now(), action_id="a1")],
        )
    )
    before = snapshot(client, store)
    failing = (
        Commit(guards={(LANE, "absent"): 2}),
        Commit(deletes=[Tombstone(key=(ACHIEVEMENT, "k1"), version=7)]),
        Commit(writes=[bump(bump(achievement("k1")))]),
    )
    for extra in failing:
        with pytest.raises(ConflictError):
            store.commit(
                Commit(
                    writes=[
                        bump(old, status=ActionStatus.SUCCEEDED, root_id="r9"),
                        action("fresh"),
                        *extra.writes,
                    ],
                    deletes=[Tombstone(key=key_of(doomed), version=1), *extra.deletes],
                    guards=dict(extra.guards),
                    enqueue=[queued_message("new", at=clock.now(), action_id="fresh")],
                    ack=["kept"],
                )
            )
        assert snapshot(client, store) == before


def test_conflict_names_first_failed_check(store: RedisWorkflowStore) -> None:
    """The conflict reported is the first failing check in the reference order (guards,
    then deletes, then writes), with its key, expected and actual version."""
    store.commit(Commit(writes=[achievement("k1"), lane("l1")]))
    with pytest.raises(ConflictError) as caught:
        store.commit(
            Commit(
                guards={(LANE, "l1"): 1, (ACTION, "nope"): 3},
                deletes=[Tombstone(key=(ACHIEVEMENT, "k1"), version=5)],
            )
        )
    assert caught.value.fields == {"key": (ACTION, "nope"), "expected": 3, "actual": 0}


# -- scripts ---------------------------------------------------------------------------------


def test_noscript_after_script_flush_is_handled(
    store: RedisWorkflowStore, client: redis.Redis
) -> None:
    """After ``SCRIPT FLUSH`` the next commit reloads its script and applies (the
    ``NOSCRIPT`` answer and the reload cost two more round trips, once)."""
    first = achievement("k1")
    store.commit(Commit(writes=[first]))
    client.script_flush()
    before = store.round_trips
    store.commit(Commit(writes=[bump(first)]))
    assert store.round_trips - before == 3
    store.commit(Commit(writes=[bump(bump(first))]))
    assert store.round_trips - before == 4
    client.script_flush()
    assert store.lease(worker="w", limit=1, lease_seconds=5) == []
    assert store.load([key_of(first)])[key_of(first)] == bump(bump(first))


# -- the epoch marker -------------------------------------------------------------------------


def test_lost_marker_stops_every_operation(store: RedisWorkflowStore, client: redis.Redis) -> None:
    """When the epoch marker disappears (Redis flushed or restarted empty), every read
    and write raises :class:`RedisDataLostError` (a non-retryable
    :class:`StoreUnavailableError`) and changes nothing; putting the same marker back
    (restoring the data) lets the store carry on."""
    record = achievement("k1")
    store.commit(Commit(writes=[record], enqueue=[queued_message("m1", at=store.now())]))
    marker = store.epoch
    client.delete(store.keys.epoch)
    operations: list[Callable[[], object]] = [
        lambda: store.load([key_of(record)]),
        lambda: store.commit(Commit(writes=[achievement("k2")])),
        lambda: store.lease(worker="w", limit=5, lease_seconds=5),
        lambda: store.ack(["m1"]),
        lambda: store.release(["m1"], worker="w"),
        lambda: store.extend(["m1"], worker="w", lease_seconds=5),
        store.next_due,
        store.queued,
        lambda: store.find_actions(ActionQuery()),
    ]
    for operation in operations:
        with pytest.raises(RedisDataLostError) as caught:
            operation()
        assert isinstance(caught.value, StoreUnavailableError)
        assert not caught.value.retryable
        assert caught.value.fields["expected"] == marker
        assert caught.value.fields["found"] is None
    assert client.exists(store.keys.record((ACHIEVEMENT, "k2"))) == 0
    client.set(store.keys.epoch, marker)
    assert store.load([key_of(record)])[key_of(record)] == record
    assert [m.id for m in store.queued()] == ["m1"]


def test_replaced_marker_is_detected(store: RedisWorkflowStore, client: redis.Redis) -> None:
    """A store bound to one marker refuses to work on a Redis where another process
    started afresh (a new marker): the error names both."""
    marker = store.epoch
    client.delete(store.keys.epoch)
    fresh = RedisWorkflowStore(client, prefix=store.keys.prefix, clock=store.clock)
    fresh.commit(Commit(writes=[achievement("k1")]))
    with pytest.raises(RedisDataLostError) as caught:
        store.load([(ACHIEVEMENT, "k1")])
    assert caught.value.fields["expected"] == marker
    assert caught.value.fields["found"] == fresh.epoch != marker


def test_create_false_refuses_a_store_without_marker(client: redis.Redis) -> None:
    """With ``create=False`` a store whose prefix has no marker raises
    :class:`RedisDataLostError` on first use instead of starting an empty store; once a
    store created the marker it binds to it."""
    prefix = unique_prefix()
    strict = RedisWorkflowStore(client, prefix=prefix, create=False)
    try:
        with pytest.raises(RedisDataLostError) as caught:
            strict.load([(ACTION, "a1")])
        assert caught.value.fields["expected"] is None
        marker = RedisWorkflowStore(client, prefix=prefix).epoch  # creates the marker
        assert strict.epoch == marker
        assert strict.load([(ACTION, "a1")]) == {(ACTION, "a1"): None}
    finally:
        drop_keys(client, strict)


# -- records, indexes, keys -------------------------------------------------------------------


def test_unreadable_header_is_corrupt_without_version(
    store: RedisWorkflowStore, client: redis.Redis
) -> None:
    """A stored value whose version header is unreadable raises
    :class:`CorruptRecordError` without a version; every version check on it fails."""
    record = achievement("k1")
    store.commit(Commit(writes=[record]))
    client.set(store.keys.record(key_of(record)), "garbage")
    with pytest.raises(CorruptRecordError) as caught:
        store.load([key_of(record)])
    assert "version" not in caught.value.fields
    with pytest.raises(ConflictError) as conflict:
        store.commit(Commit(writes=[bump(record)]))
    assert conflict.value.fields["actual"] == -1


def test_corrupt_record_names_stored_version(
    store: RedisWorkflowStore, client: redis.Redis
) -> None:
    """Undecodable text under a readable header raises :class:`CorruptRecordError`
    carrying the stored version, so the runtime can replace the record."""
    record = bump(achievement("k1"))
    store.commit(Commit(writes=[achievement("k1")]))
    store.commit(Commit(writes=[record]))
    client.set(store.keys.record(key_of(record)), "2|[not json")
    with pytest.raises(CorruptRecordError) as caught:
        store.load([key_of(record)])
    assert caught.value.fields["version"] == 2


def test_tampered_record_fails_digest(store: RedisWorkflowStore, client: redis.Redis) -> None:
    """A stored record whose state was edited (valid JSON, wrong digest) is reported as
    corrupt, not returned: the decode cache never hides a changed value."""
    record = achievement("k1", checksum="honest")
    store.commit(Commit(writes=[record]))
    assert store.load([key_of(record)])[key_of(record)] == record
    tampered = record_value(record).replace("honest", "forged")
    client.set(store.keys.record(key_of(record)), tampered)
    with pytest.raises(CorruptRecordError) as caught:
        store.load([key_of(record)])
    assert caught.value.fields["reason"] == "digest mismatch"


def test_indexes_follow_every_field(store: RedisWorkflowStore) -> None:
    """``find_actions`` follows a version that changes any indexed field (as the
    runtime's stand-in for an unreadable action does) and forgets deleted actions."""
    first = action("a1", root_id="r1", name="deploy", actor_type="Server", actor_key="s1")
    store.commit(Commit(writes=[first]))
    second = bump(
        first,
        root_id="r2",
        name="unreadable",
        actor_type="",
        actor_key="",
        status=ActionStatus.FAILED,
        created_at=9.0,
    )
    store.commit(Commit(writes=[second]))
    for old in (
        ActionQuery(root_id="r1"),
        ActionQuery(name="deploy"),
        ActionQuery(actor_type="Server"),
        ActionQuery(actor_key="s1"),
        ActionQuery(statuses=frozenset({ActionStatus.PENDING})),
    ):
        assert store.find_actions(old) == [], old
    for new in (
        ActionQuery(root_id="r2"),
        ActionQuery(name="unreadable", actor_type="", actor_key=""),
        ActionQuery(statuses=frozenset({ActionStatus.FAILED})),
        ActionQuery(),
    ):
        assert store.find_actions(new) == [second], new
    store.commit(Commit(deletes=[Tombstone(key=key_of(second), version=2)]))
    assert store.find_actions(ActionQuery()) == []
    assert store.find_actions(ActionQuery(root_id="r2")) == []


def test_find_actions_combines_statuses_with_fields(store: RedisWorkflowStore) -> None:
    """``statuses`` together with other fields keeps only actions matching all of them,
    in creation order, and ``limit`` stops early."""
    performing = ActionStatus.PERFORMING
    store.commit(
        Commit(
            writes=[
                action(f"a{i}", root_id="r", status=performing if i % 2 else ActionStatus.PENDING)
                for i in range(1200)
            ]
        )
    )
    query = ActionQuery(root_id="r", statuses=frozenset({performing}))
    found = store.find_actions(query)
    assert [r.id for r in found] == sorted(f"a{i}" for i in range(1, 1200, 2))
    limited = store.find_actions(
        ActionQuery(root_id="r", statuses=frozenset({performing}), limit=3)
    )
    assert limited == found[:3]


def test_every_key_shares_one_hash_slot(store: RedisWorkflowStore, client: redis.Redis) -> None:
    """Every key the store creates carries the prefix's hash tag, so all of them map to
    one Redis Cluster slot (scripts and ``MGET`` never cross slots)."""
    first = action("a1")
    store.commit(
        Commit(
            writes=[first, lane("l1"), achievement("k1")],
            enqueue=[queued_message("m1", at=store.now())],
        )
    )
    store.lease(worker="w", limit=1, lease_seconds=5)
    names = list(client.scan_iter(match=store.keys.pattern()))
    assert len(names) > 8
    assert {key_slot(name) for name in names} == {key_slot(store.keys.epoch.encode())}


def test_prefixes_are_isolated(client: redis.Redis) -> None:
    """Two stores with different prefixes on one database share nothing."""
    clock = FakeClock()
    one = RedisWorkflowStore(client, prefix=unique_prefix(), clock=clock)
    two = RedisWorkflowStore(client, prefix=unique_prefix(), clock=clock)
    try:
        one.commit(Commit(writes=[action("a1")], enqueue=[queued_message("m1", at=clock.now())]))
        assert two.load([(ACTION, "a1")]) == {(ACTION, "a1"): None}
        assert two.queued() == []
        assert two.find_actions(ActionQuery()) == []
        assert two.lease(worker="w", limit=5, lease_seconds=5) == []
        assert two.next_due() is None
    finally:
        drop_keys(client, one)
        drop_keys(client, two)


def test_bad_options_are_rejected_early(client: redis.Redis) -> None:
    """Bad prefixes, clients, clocks and lease lengths are refused when given."""
    with pytest.raises(InvalidInputError):
        RedisWorkflowStore(client, prefix="")
    with pytest.raises(InvalidInputError):
        RedisWorkflowStore(client, prefix="a{b}")
    with pytest.raises(TypeError):
        RedisWorkflowStore(object(), prefix="p")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RedisWorkflowStore(client, clock=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        RedisWorkflowStore("redis://127.0.0.1:6379/0?prefix=one", prefix="two")
    store = RedisWorkflowStore(client, prefix=unique_prefix())
    with pytest.raises(InvalidInputError):
        store.lease(worker="w", limit=1, lease_seconds=0)


def test_open_store_takes_redis_urls(redis_url: str, client: redis.Redis) -> None:
    """``open_store`` opens a Redis store for a ``redis://`` URL; ``?prefix=`` picks the
    prefix, and closing the store closes the client it opened."""
    prefix = unique_prefix()
    separator = "&" if "?" in redis_url else "?"
    store = open_store(f"{redis_url}{separator}prefix={prefix}", clock=FakeClock())
    assert isinstance(store, RedisWorkflowStore)
    try:
        assert store.keys.prefix == prefix
        store.commit(Commit(writes=[achievement("k1")]))
        assert client.exists(f"{{{prefix}}}:r:achievement:k1") == 1
    finally:
        store.close()
        drop_keys(client, store)
    with pytest.raises(StoreUnavailableError):
        store.load([(ACHIEVEMENT, "k1")])


def test_unreachable_server_is_store_unavailable() -> None:
    """A server that does not answer becomes :class:`StoreUnavailableError`, raised from
    the driver's error."""
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    store = RedisWorkflowStore(dead, prefix=unique_prefix())
    with pytest.raises(StoreUnavailableError) as caught:
        store.load([(ACTION, "a1")])
    assert isinstance(caught.value.__cause__, redis.RedisError)
    assert not isinstance(caught.value, RedisDataLostError)


# -- the queue ----------------------------------------------------------------------------------


def test_concurrent_leases_never_share_a_message(client: redis.Redis, redis_url: str) -> None:
    """Four threads, each with its own client, leasing from one queue until it is empty,
    receive every message exactly once."""
    prefix = unique_prefix()
    clock = FakeClock()
    seed = RedisWorkflowStore(client, prefix=prefix, clock=clock)
    total = 600
    seed.commit(
        Commit(enqueue=[queued_message(f"m{i:04d}", at=clock.now() - i % 7) for i in range(total)])
    )
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(worker: str) -> None:
        own = RedisWorkflowStore(redis.Redis.from_url(redis_url), prefix=prefix, clock=clock)
        try:
            start.wait()
            mine = got.setdefault(worker, [])
            while batch := own.lease(worker=worker, limit=random.randint(1, 9), lease_seconds=60):
                mine.extend(d.message.id for d in batch)
        except BaseException as error:  # reported in the test's thread
            errors.append(error)
        finally:
            own.close()
            own.client.close()

    try:
        threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        leased = [message_id for ids in got.values() for message_id in ids]
        assert len(leased) == total
        assert set(leased) == {f"m{i:04d}" for i in range(total)}
        assert all(got.values()), "every worker got some work"
    finally:
        drop_keys(client, seed)


def test_queue_matches_the_reference_adapter(store: RedisWorkflowStore) -> None:
    """Random enqueues, leases (with and without ids), releases, extends, acks and clock
    moves give the same deliveries, due times and queues on Redis as in the reference
    adapter."""
    clock = store.clock
    assert isinstance(clock, FakeClock)
    memory = InMemoryWorkflowStore(clock=clock)
    rng = random.Random(4)
    ids = [f"m{i}" for i in range(12)]
    for _ in range(400):
        op = rng.randrange(7)
        message_id = rng.choice(ids)
        worker = rng.choice(["w1", "w2"])
        if op == 0:
            message = queued_message(
                message_id, at=clock.now() + rng.choice([0, 0, 3, 10]), action_id=rng.choice("xy")
            )
            for s in (store, memory):
                s.commit(Commit(enqueue=[message]))
        elif op == 1:
            # Without ids every due message is taken: which of several equally due
            # messages a smaller limit picks is not part of the contract.
            picked = rng.sample(ids, 4) if rng.random() < 0.3 else None
            limit = rng.randint(0, 3) if picked is not None else len(ids)
            results = [
                [
                    (d.message.id, d.deliveries, d.lease_until)
                    for d in s.lease(worker=worker, limit=limit, lease_seconds=5, ids=picked)
                ]
                for s in (store, memory)
            ]
            if picked is None:
                results = [sorted(r) for r in results]
            assert results[0] == results[1]
        elif op == 2:
            for s in (store, memory):
                s.release([message_id], worker=worker)
        elif op == 3:
            seconds = rng.choice([1, 8])
            for s in (store, memory):
                s.extend([message_id], worker=worker, lease_seconds=seconds)
        elif op == 4:
            for s in (store, memory):
                s.commit(Commit(ack=[message_id]))
        elif op == 5:
            clock.advance(rng.choice([0.5, 1, 4]))
        assert store.next_due() == memory.next_due()
        assert store.queued() == sorted(memory.queued(), key=lambda m: (m.available_at, m.id))
        assert store.queued(action_id="x") == sorted(
            memory.queued(action_id="x"), key=lambda m: (m.available_at, m.id)
        )


# -- the runtime on Redis ---------------------------------------------------------------------


class Box:
    """A trivial actor keyed by its id."""

    def __init__(self, id: str) -> None:
        self.id = id


def _noop(step: Any, box: Box) -> None:
    return None


def box_registry(*, wait: float = 0.0) -> Registry:
    """``tree``: a step fanning out three children (all in one lane shared by every
    tree, and each skipped if already achieved) plus a timer of *wait* seconds, then a
    final step."""

    def fan(step: Any, box: Box) -> None:
        step.on([Box(f"{box.id}.{i}") for i in range(3)], "leaf")
        step.wait(wait)

    registry = Registry()
    registry.register_actor(Box, name="Box", key=lambda b: b.id, load=Box)
    tree = registry.action(Box, "tree")
    tree.step(name="fan")(fan)
    tree.step(name="final")(_noop)
    registry.action(
        Box,
        "leaf",
        steps=[_noop],
        concurrency_key=lambda box: "shared-lane",
        checksum=lambda box: box.id,
        checksum_key=lambda box: f"leaf:{box.id}",
    )
    return registry


def test_trees_run_to_completion_on_redis(store: RedisWorkflowStore) -> None:
    """Trees whose children share a lane and achievements across trees, with timers,
    run to success on the Redis store, leaving an empty queue."""
    app = App(box_registry(wait=60), store)
    roots = [app.invoke_later(Box(f"b{n}"), "tree").id for n in range(4)]
    drain(app)
    statuses = {app.get(str(root)).status for root in roots}
    assert statuses == {ActionStatus.SUCCEEDED}
    assert store.queued() == []
    assert len(store.find_actions(ActionQuery(name="leaf"))) == 12
    unfinished = ActionQuery(statuses=frozenset({ActionStatus.PENDING, ActionStatus.PERFORMING}))
    assert store.find_actions(unfinished) == []


def test_worker_threads_run_on_redis(redis_url: str, client: redis.Redis) -> None:
    """A two-thread worker on the system clock runs submitted trees to the end."""
    store = RedisWorkflowStore(redis_url, prefix=unique_prefix())
    app = App(box_registry(), store)
    try:
        roots = [str(app.invoke_later(Box(f"w{n}"), "tree").id) for n in range(3)]
        with app.worker(threads=2, poll=0.01) as worker:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(app.get(r).status is ActionStatus.SUCCEEDED for r in roots):
                    break
                worker.wait_idle(timeout=1, settle=0.01)
        assert {app.get(r).status for r in roots} == {ActionStatus.SUCCEEDED}
    finally:
        store.close()
        drop_keys(client, store)


def test_unreadable_action_is_replaced_and_reindexed(
    store: RedisWorkflowStore, client: redis.Redis
) -> None:
    """An action whose stored text was damaged (its version header intact) ends
    ``failed`` with a CorruptRecordError through the runtime's stand-in, the indexes
    follow the stand-in, and the other trees still succeed."""
    app = App(box_registry(), store)
    damaged = str(app.invoke_later(Box("bad"), "tree").id)
    healthy = [str(app.invoke_later(Box(f"ok{n}"), "tree").id) for n in range(2)]
    name = store.keys.record((ACTION, damaged))
    header = bytes(client.get(name) or b"").partition(b"|")[0]  # type: ignore[arg-type]
    client.set(name, header + b"|[1, 2, tampered")
    drain(app)
    record = store.load([(ACTION, damaged)])[(ACTION, damaged)]
    assert record is not None
    assert record.version == int(header) + 1
    assert app.get(damaged).status is ActionStatus.FAILED
    assert [r.id for r in store.find_actions(ActionQuery(name="unreadable"))] == [damaged]
    assert store.find_actions(ActionQuery(name="tree", root_id=damaged)) == []
    assert {app.get(h).status for h in healthy} == {ActionStatus.SUCCEEDED}


# -- the callbacks index -----------------------------------------------------------------------


def test_callbacks_index_is_built_once_for_actions_an_older_store_wrote(
    client: redis.Redis, store: RedisWorkflowStore
) -> None:
    """Actions written before ``x:after`` existed (index entries without the callbacks
    state, no index marker) are indexed by the first store that binds to the prefix, so
    ``find_actions(callbacks="pending")`` -- the recovery sweep's query -- finds them;
    committing over such an old entry keeps every index right."""
    owing, done = (action(i, status=ActionStatus.SUCCEEDED) for i in ("owing", "done"))
    store.commit(Commit(writes=[owing, done]))
    owing, done = bump(owing, callbacks="pending"), bump(done, callbacks="ok")
    store.commit(Commit(writes=[owing, done]))
    keys = store.keys
    client.delete(keys.index_after, keys.index_version)  # as an older stepkernel left it
    for action_id in ("owing", "done"):
        entry = json.loads(client.hget(keys.index_meta, action_id) or "[]")
        client.hset(keys.index_meta, action_id, json.dumps(entry[:6]))
    again = RedisWorkflowStore(client, prefix=keys.prefix, clock=FakeClock())
    pending = ActionQuery(callbacks="pending")
    assert [r.id for r in again.find_actions(pending)] == ["owing"]
    assert client.get(keys.index_version) == b"2"
    again.commit(Commit(writes=[bump(owing, callbacks="ok")]))
    assert again.find_actions(pending) == []
    assert client.zcard(keys.index_after) == 0
    late = action("late", status=ActionStatus.SUCCEEDED)  # an old entry, not owing yet
    again.commit(Commit(writes=[late]))
    entry = json.loads(client.hget(keys.index_meta, "late") or "[]")
    client.hset(keys.index_meta, "late", json.dumps(entry[:6]))
    again.commit(Commit(writes=[bump(late, callbacks="pending")]))
    assert [r.id for r in again.find_actions(pending)] == ["late"]
    assert [r.id for r in again.find_actions(ActionQuery(callbacks="ok"))] == ["done", "owing"]


def test_callbacks_indexing_skips_an_unreadable_action(
    client: redis.Redis, store: RedisWorkflowStore
) -> None:
    """One finished action whose stored text no longer decodes does not stop the
    one-time callbacks indexing: the others are indexed, the marker is written, and
    the new store's first call works."""
    owing = action("owing", status=ActionStatus.SUCCEEDED)
    broken = action("broken", status=ActionStatus.SUCCEEDED)
    store.commit(Commit(writes=[owing, broken]))
    store.commit(Commit(writes=[bump(owing, callbacks="pending")]))
    keys = store.keys
    client.delete(keys.index_after, keys.index_version)
    RedisBackdoors().corrupt(store, (ACTION, "broken"))
    again = RedisWorkflowStore(client, prefix=keys.prefix, clock=FakeClock())
    assert again.lease(worker="w", limit=1, lease_seconds=5) == []
    assert client.get(keys.index_version) == b"2"
    assert client.zrange(keys.index_after, 0, -1) == [b"owing"]


def test_a_late_move_leaves_a_fresh_message_of_the_same_id_alone(
    client: redis.Redis, store: RedisWorkflowStore
) -> None:
    """A move that comes after the message was moved and queued afresh under the same
    id (its worker stalled past its lease) changes nothing."""
    fresh = queued_message("m1", at=store.now())
    store.commit(Commit(enqueue=[fresh]))
    RedisBackdoors().corrupt_message(store, "m1", "{")
    assert store.lease(worker="w2", limit=5, lease_seconds=30) == []
    store.commit(Commit(enqueue=[fresh]))
    store._run("lease", dead.MOVE, [repr(store.now()), "m1", "late", "{"])
    assert store.queued() == [fresh]
    [letter] = store.dead_letters()
    assert letter.data == "{"
    assert letter.reason != "late"


def test_a_failed_move_still_hands_out_the_rest_of_the_batch(
    store: RedisWorkflowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When moving an undecodable message fails, the lease still returns the messages
    that decode; a later lease moves the damaged one."""
    now = store.now()
    store.commit(Commit(enqueue=[queued_message("bad", at=now - 1), queued_message("ok", at=now)]))
    RedisBackdoors().corrupt_message(store, "bad", "{")
    monkeypatch.setattr(dead, "MOVE", Script("dead_move", "return redis.error_reply('boom')"))
    assert [d.message.id for d in store.lease(worker="w1", limit=5, lease_seconds=5)] == ["ok"]
    monkeypatch.undo()
    assert store.dead_letters() == []
    assert isinstance(store.clock, FakeClock)
    store.clock.advance(10)
    assert [d.message.id for d in store.lease(worker="w2", limit=5, lease_seconds=5)] == ["ok"]
    assert [letter.message_id for letter in store.dead_letters()] == ["bad"]
