"""The Redis store on private ``redis-server`` processes started by these tests: an empty
restart is detected, ``appendfsync always`` survives a crash, settings that lose data
are logged, and the whole store contract holds on a three-node Redis Cluster.

Servers listen on free ports of 127.0.0.1 with their files in a temporary directory and
are killed afterwards.  Without a ``redis-server`` binary the tests skip (fail under
``CI=true``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from servers import PrivateRedis, unavailable

from stepkernel.adapters.redis import RedisDataLostError, RedisWorkflowStore
from stepkernel.domain.records import ACHIEVEMENT, ACTION, key_of
from stepkernel.ports.clock import Clock
from stepkernel.ports.store import ActionQuery, Commit, WorkflowStore
from stepkernel.testing.backdoors import RedisBackdoors
from stepkernel.testing.clock import FakeClock
from stepkernel.testing.contract import WorkflowStoreContract, achievement, action, bump
from stepkernel.testing.contract_support import queued_message

pytestmark = pytest.mark.integration

NO_PERSISTENCE = ("--appendonly", "no")
ALWAYS_FSYNC = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def servers() -> Iterator[list[PrivateRedis]]:
    """Private servers a test starts; all are killed at the end."""
    started: list[PrivateRedis] = []
    yield started
    for server in started:
        server.crash()


def private(servers: list[PrivateRedis], directory: Path, *options: str) -> PrivateRedis:
    """Start a private server (killed with the ``servers`` fixture)."""
    server = PrivateRedis(directory, *options)
    servers.append(server)
    return server.start()


def test_empty_restart_is_detected(servers: list[PrivateRedis], tmp_path: Path) -> None:
    """After a Redis without persistence restarts (empty), the store that had written to
    it raises :class:`RedisDataLostError` for reads and writes instead of carrying on,
    and writes nothing; a new store opened with ``create=False`` refuses to start."""
    server = private(servers, tmp_path / "volatile", *NO_PERSISTENCE)
    clock = FakeClock()
    store = RedisWorkflowStore(server.url, prefix="app", clock=clock)
    record = action("a1")
    store.commit(Commit(writes=[record], enqueue=[queued_message("m1", at=clock.now())]))
    assert store.load([key_of(record)])[key_of(record)] == record
    marker = store.epoch

    server.crash()
    server.start()

    with pytest.raises(RedisDataLostError) as caught:
        store.load([key_of(record)])
    assert caught.value.fields == {
        "prefix": "app",
        "expected": marker,
        "found": None,
        "operation": "epoch",
    }
    with pytest.raises(RedisDataLostError):  # NOSCRIPT first: reloaded, then refused
        store.commit(Commit(writes=[bump(record)]))
    with pytest.raises(RedisDataLostError):
        store.lease(worker="w", limit=10, lease_seconds=30)
    with pytest.raises(RedisDataLostError):
        store.find_actions(ActionQuery())
    probe = redis.Redis.from_url(server.url)
    assert probe.dbsize() == 0
    strict = RedisWorkflowStore(server.url, prefix="app", create=False)
    with pytest.raises(RedisDataLostError):
        strict.load([key_of(record)])
    assert probe.dbsize() == 0
    probe.close()
    store.close()
    strict.close()


def test_always_fsync_survives_a_crash(servers: list[PrivateRedis], tmp_path: Path) -> None:
    """With ``appendonly yes`` and ``appendfsync always`` every acknowledged commit,
    lease and acknowledgement survives a SIGKILL: after the restart the same store goes
    on (reloading its scripts) with every record, message and lease intact."""
    server = private(servers, tmp_path / "durable", *ALWAYS_FSYNC)
    clock = FakeClock()
    store = RedisWorkflowStore(server.url, prefix="app", clock=clock)
    records = [achievement(f"k{i}") for i in range(50)]
    for i, record in enumerate(records):
        store.commit(Commit(writes=[record], enqueue=[queued_message(f"m{i}", at=clock.now() + i)]))
    store.commit(Commit(writes=[bump(records[0])], ack=["m0"]))
    clock.advance(10)
    leased = store.lease(worker="w1", limit=3, lease_seconds=30)
    assert [d.message.id for d in leased] == ["m1", "m2", "m3"]
    expected = store.load([key_of(r) for r in records])

    server.crash()
    server.start()

    assert store.load([key_of(r) for r in records]) == expected
    assert sorted(m.id for m in store.queued()) == sorted(f"m{i}" for i in range(1, 50))
    again = store.lease(worker="w2", limit=10, lease_seconds=30)
    assert [d.message.id for d in again] == [f"m{i}" for i in range(4, 11)]
    store.commit(Commit(writes=[bump(bump(records[0]))]))
    store.close()


# -- Redis Cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-primary Redis Cluster of private servers, and a client of it."""
    cli = shutil.which("redis-cli")
    if cli is None:
        unavailable("Redis Cluster", "no redis-cli binary on PATH to create it")
    assert cli is not None
    root = tmp_path_factory.mktemp("cluster")
    nodes: list[PrivateRedis] = []
    try:
        for n in range(3):
            node = PrivateRedis(
                root / f"node{n}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(root / f"node{n}" / "nodes.conf"),
                *NO_PERSISTENCE,
                cluster=True,
            )
            nodes.append(node)
            node.start()
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(node.port) for node in nodes):
            if time.monotonic() > deadline:
                pytest.fail("the private Redis Cluster did not become ready")
            time.sleep(0.1)
        client = RedisCluster(host="127.0.0.1", port=nodes[0].port)
        yield client
        client.close()
    finally:
        for node in nodes:
            node.crash()


def _cluster_ok(port: int) -> bool:
    """Whether the node on *port* reports ``cluster_state:ok``."""
    probe = redis.Redis(port=port, decode_responses=True)
    try:
        reply: Any = probe.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    finally:
        probe.close()
    if isinstance(reply, dict):
        return reply.get("cluster_state") == "ok"
    return "cluster_state:ok" in str(reply)


def _node_of(cluster: RedisCluster, name: str) -> str:
    """The ``host:port`` of the primary holding key *name*."""
    node: Any = cluster.get_node_from_key(name)  # type: ignore[no-untyped-call]
    return str(node.name)


class TestRedisClusterStore(RedisBackdoors, WorkflowStoreContract):
    """The Redis adapter meets the store contract on a Redis Cluster: every key carries
    the prefix's hash tag, so each store lives in one slot (on one shard)."""

    counter = 0

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster: RedisCluster) -> None:
        self.client = cluster

    def make_store(self, clock: Clock) -> WorkflowStore:
        TestRedisClusterStore.counter += 1
        return RedisWorkflowStore(self.client, prefix=f"t{self.counter}", clock=clock)


def test_cluster_keeps_a_store_on_one_node(cluster: RedisCluster) -> None:
    """On a cluster, all keys of one store are on one node, and stores with different
    prefixes may be on different nodes."""
    clock = FakeClock()
    nodes: set[str] = set()
    for prefix in ("alpha", "beta", "gamma", "delta"):
        store = RedisWorkflowStore(cluster, prefix=prefix, clock=clock)
        store.commit(
            Commit(
                writes=[action("a1"), achievement("k1")],
                enqueue=[queued_message("m1", at=clock.now())],
            )
        )
        names = [store.keys.record((ACTION, "a1")), store.keys.record((ACHIEVEMENT, "k1"))]
        names += [store.keys.epoch, store.keys.due, store.keys.message("m1")]
        owners = {_node_of(cluster, name) for name in names}
        assert len(owners) == 1
        nodes |= owners
    assert len(nodes) > 1


class _Collect(logging.Handler):
    """Keeps the messages logged to it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_settings_that_lose_data_are_logged(servers: list[PrivateRedis], tmp_path: Path) -> None:
    """When a store binds it warns about a server that would lose data (no append-only
    file, an eviction policy) and says nothing about a durable one."""
    collect = _Collect()
    logger = logging.getLogger("stepkernel.adapters.redis")
    logger.addHandler(collect)
    try:
        durable = private(servers, tmp_path / "durable", *ALWAYS_FSYNC)
        store = RedisWorkflowStore(durable.url, prefix="app")
        store.load([(ACTION, "a1")])
        store.close()
        assert collect.messages == []
        risky = private(
            servers, tmp_path / "risky", *NO_PERSISTENCE, "--maxmemory-policy", "allkeys-lru"
        )
        store = RedisWorkflowStore(risky.url, prefix="app")
        store.load([(ACTION, "a1")])
        store.load([(ACTION, "a2")])
        store.close()
        assert len(collect.messages) == 2
        assert "allkeys-lru" in collect.messages[0]
        assert "appendonly no" in collect.messages[1]
    finally:
        logger.removeHandler(collect)
