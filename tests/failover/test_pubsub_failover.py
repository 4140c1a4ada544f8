"""A sharded subscriber follows a manual failover (``CLUSTER FAILOVER`` on the replica).

Unlike a killed master, the demoted master stays up: its connection does not drop. Valkey
9.1 ends its sharded subscriptions instead (``sunsubscribe <channel> 0``, unasked; the
promoted replica does the same to its own sharded subscribers), and the subscriber must
move to the new master by itself and fill from history what it missed there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

import redkit
from redkit.keys import key_slot
from redkit.notify import Event, Subscription
from redkit.notify.hub import hub_for
from servers import ReplicatedCluster

pytestmark = pytest.mark.failover

WAIT = 10.0
"""A guard against a hang, not a measure: how long a silent subscriber is waited for."""


async def receive(sub: Subscription, last: int) -> list[Event]:
    """Events up to the one numbered ``last``, or fewer if the subscriber went silent for
    ``WAIT`` seconds. Bounded: at most 10,000 events."""
    got: list[Event] = []
    for _ in range(10_000):
        event = await sub.get(timeout=WAIT)
        if event is None:
            break
        got.append(event)
        if not event.is_gap and event.data["n"] >= last:
            break
    return got


async def test_a_sharded_subscriber_follows_a_manual_failover_and_misses_nothing(
    replicated_cluster: ReplicatedCluster,
) -> None:
    async with (
        redkit.connect(replicated_cluster.url, "mfo") as listener,
        redkit.connect(replicated_cluster.url, "mfo") as publisher,
    ):
        bus = listener.notifications(history=1000)
        out = publisher.notifications(history=1000)
        assert bus.sharded
        slot = key_slot(hub_for(listener, True).redis_name("deploys"))
        master = replicated_cluster.master_of_slot(slot)
        replica = replicated_cluster.replica_of(master)
        published: list[int] = []

        async def publish(count: int) -> None:
            for _ in range(count):
                await out.publish("deploys", {"n": len(published)})
                published.append(len(published))

        async with bus.subscribe("deploys") as sub:
            await publish(10)
            node = replicated_cluster.nodes[replica]
            direct: Any = aioredis.Redis(host=node.host, port=node.port)
            try:
                await direct.execute_command("CLUSTER", "FAILOVER")
            finally:
                await direct.aclose()
            for _ in range(500):  # bounded: a manual failover takes well under a second
                if replicated_cluster.master_of_slot(slot) == replica:
                    break
                await asyncio.sleep(0.02)
            assert replicated_cluster.master_of_slot(slot) == replica
            await publish(10)
            got = await receive(sub, 19)

        assert [e.data["n"] for e in got] == published == list(range(20))
        assert not any(e.is_gap for e in got)
