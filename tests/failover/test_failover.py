"""A master dies (SIGKILL) under load and its replica takes over: every client recovers.

What the checks allow is what the primitives promise with asynchronous replication (the
default durability): a write the dead master acknowledged but had not yet sent to its
replica is lost; so an acknowledged enqueue may be lost if it came just before the kill,
and a job whose claim or acknowledgement was lost runs again (at-least-once). Anything
acknowledged well before the kill is kept, and no job runs more than twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import redkit
from failover.conftest import FIGURES
from failover.load import HANG, Load
from redkit.embedded import ValkeyProcess
from redkit.keys import key_slot
from servers import ReplicatedCluster, SentinelGroup

pytestmark = pytest.mark.failover

RECOVERY_BOUND = 30.0
"""Every client must work again within this long after the kill (a bound for a loaded
machine; the figures measured are reported in the run's summary)."""

REPLICATION_LAG = 1.0
"""An acknowledged write older than this at the kill must have reached the replica."""


async def _warm_up(load: Load) -> None:
    await load.wait(
        lambda: (
            len(load.runs) >= 20
            and all(len(t.ok) >= 3 for t in load.tracks.values())
            and len(load.tracks) == 7
        ),
        HANG,
        "the load did not start",
    )


async def _kill_and_recover(
    load: Load,
    kill: Callable[[], None],
    promoted: Callable[[], bool],
    restart: Callable[[], object],
    label: str,
    told: tuple[str, ...],
) -> tuple[float, float]:
    """Kill the master, wait until every actor succeeded again; return the kill time and
    the time the replica was seen promoted. The old master restarts once the replica took
    over (as a crashed server would be), and rejoins as the new master's replica."""
    killed = time.monotonic()
    kill()
    failover = await load.wait(promoted, RECOVERY_BOUND, f"{label}: the replica was not promoted")
    restart()
    # Recovered: a success after the failover, measured from the kill (a call the dying
    # master, or another Cluster node, answered just after the kill is no recovery).
    after = killed + failover
    await load.wait(
        lambda: all(r is not None for r in load.recoveries(after).values()),
        RECOVERY_BOUND,
        f"{label}: not every client recovered (recoveries {load.recoveries(after)}, "
        f"last errors {load.errors()})",
    )
    recoveries = {k: v + failover for k, v in load.recoveries(after).items() if v is not None}
    FIGURES[f"{label}: replica promoted after"] = f"{failover:.2f} s"
    FIGURES[f"{label}: clients recovered after"] = ", ".join(
        f"{name} {seconds:.2f} s" for name, seconds in sorted(recoveries.items())
    )
    # Everyone saw the outage as ConnectionLost (or as a wait), never as a hang; the
    # callers of the dead master were told (the workers and the subscriber wait inside
    # redkit; on a Cluster, a caller of another master may only have waited for its lock).
    assert all(t.hangs == 0 for t in load.tracks.values()), {
        n: t.hangs for n, t in load.tracks.items()
    }
    for name in told:
        assert load.tracks[name].lost, f"{name} never raised ConnectionLost"
    return killed, after


async def _settle_and_check(load: Load, killed: float, promoted: float, label: str) -> None:
    """Let the load run a little on the new master, drain the queue, check the promises."""
    await asyncio.sleep(0.5)
    await load.stop_producing()
    acked = set(load.acked)
    # Jobs whose run the failover hid come back when their lease (2 s) ends.
    with_leases = 2 * 2.0 + HANG
    await load.wait(
        lambda: acked <= {n for n, _ in load.runs} | _lost_candidates(load, killed),
        with_leases,
        f"{label}: acknowledged jobs were not run",
    )
    await asyncio.sleep(0.3)  # a job handed out twice has time to show it
    history = await _history(load)
    await load.stop()

    ran: dict[int, list[float]] = {}
    for n, began in load.runs:
        ran.setdefault(n, []).append(began)
    lost = sorted(acked - set(ran))
    # Only a write acknowledged within the replication lag before the kill may be lost;
    # with durability="replicated", none.
    assert all(load.acked[n] > killed - REPLICATION_LAG for n in lost), lost
    if load.durability == "replicated":
        assert not lost, lost
    twice = {n: starts for n, starts in ran.items() if len(starts) > 1}
    assert all(len(starts) == 2 for starts in twice.values()), twice
    # A second run only for a job claimed from the old master (its claim or its
    # acknowledgement was lost with it, and its lease ran out): its first run began before
    # the replica took over (between the kill and then, nothing served the queue).
    assert all(starts[0] < promoted for starts in twice.values()), twice
    FIGURES[f"{label}: jobs"] = (
        f"{len(acked)} acknowledged, {len(lost)} lost, {len(twice)} run twice"
    )

    # Fencing tokens never went back, across the failover.
    assert load.fences == sorted(set(load.fences)), load.fences
    FIGURES[f"{label}: fencing tokens"] = f"{load.fences[0]}..{load.fences[-1]}, none repeated"

    # The subscriber: no event twice, in order, and every event that the new master's
    # history holds was delivered; a gap marker only where history lost the last event seen.
    events = [e for e in load.received if not e.is_gap]
    gaps = [e for e in load.received if e.is_gap]
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
    kept = set(history)
    first_seen = ids[0]
    missing = [
        i
        for i in history
        if tuple(int(p) for p in i.split("-")) >= tuple(int(p) for p in first_seen.split("-"))
        and i not in set(ids)
    ]
    assert not missing, (
        f"{len(missing)} of {len(history)} events in history not delivered: {missing[:3]}.."
        f"{missing[-3:]}; delivered {len(ids)}: {ids[:2]}..{ids[-2:]}; gaps {gaps}"
    )
    for gap in gaps:
        assert gap.data["after"] not in kept, gap
    FIGURES[f"{label}: events"] = (
        f"{len(events)} delivered, {len(load.published)} published, {len(gaps)} gap marker(s)"
    )


def _lost_candidates(load: Load, killed: float) -> set[int]:
    return {n for n, at in load.acked.items() if killed - REPLICATION_LAG < at < killed + HANG}


async def _history(load: Load) -> list[str]:
    rk = load.clients[-1]  # the publisher's client, which works again by now
    bus = rk.notifications(history=100_000)
    async with asyncio.timeout(HANG):
        events = await bus.history("feed", count=100_000)
    return [e.id for e in events]


def _restart_as_replica(group: SentinelGroup, old: ValkeyProcess) -> None:
    """Start the dead master again as the new master's replica (the Sentinels would make
    it one too, some seconds after it answers)."""
    new = group.current_master()
    old.config = {**old.config, "replicaof": [new.host, str(new.port)]}
    old.start()


DURABILITY = pytest.mark.parametrize("durability", ["async", "replicated"])


@DURABILITY
async def test_a_sentinel_failover_under_load_is_survived_by_every_client(
    sentinel_group: SentinelGroup, namespace: str, durability: str
) -> None:
    load = Load(sentinel_group.url, namespace, durability=durability)
    label = f"sentinel, durability={durability}"
    await load.start()
    try:
        await _warm_up(load)
        old = sentinel_group.master
        killed, promoted = await _kill_and_recover(
            load,
            old.kill,
            lambda: sentinel_group.current_master() is not old,
            lambda: _restart_as_replica(sentinel_group, old),
            label,
            told=("enqueue", "rate limit", "lock", "publish"),
        )
        await _settle_and_check(load, killed, promoted, label)
    finally:
        await load.stop()


@DURABILITY
async def test_a_cluster_failover_under_load_is_survived_by_every_client(
    replicated_cluster: ReplicatedCluster, namespace: str, durability: str
) -> None:
    load = Load(replicated_cluster.url, namespace, durability=durability)
    label = f"cluster, durability={durability}"
    # The master that serves the queue dies (with it, in a Cluster that needs every slot
    # covered, the whole Cluster is down until its replica takes over).
    async with redkit.connect(replicated_cluster.url, namespace) as rk:
        slot = key_slot(rk.queue("work").active_key)
    master = replicated_cluster.master_of_slot(slot)
    replica = replicated_cluster.replica_of(master)
    await load.start()
    try:
        await _warm_up(load)
        killed, promoted = await _kill_and_recover(
            load,
            replicated_cluster.nodes[master].kill,
            lambda: replicated_cluster.master_of_slot(slot) == replica,
            replicated_cluster.nodes[master].start,
            label,
            told=("enqueue",),
        )
        await _settle_and_check(load, killed, promoted, label)
    finally:
        await load.stop()
