"""Session activity: sessions used, created and revoked in the last minutes, every process's,
counted without a round trip or a write on the read path."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from redkit.errors import InvalidInput
from redkit.keys import key_slot
from redkit.sessions import ACTIVITY_MINUTES, SessionActivity, SessionStore
from sessions.counting import CommandCounter


async def _settled(store: SessionStore, active: int, minutes: int = 5) -> SessionActivity:
    """The store's activity once ``active`` sessions show (other processes flush by their
    timer, within a second); the last reading if they never do."""
    got = await store.activity(minutes)
    for _ in range(100):  # bounded: 100 x 0.05 s, well past the 1 s flush interval
        if got.active == active:
            break
        await asyncio.sleep(0.05)
        got = await store.activity(minutes)
    return got


@pytest.mark.cluster
async def test_sessions_used_by_two_processes_count_once_each_in_the_active_count(
    rk: redkit.Redkit, redis_url: str, namespace: str
) -> None:
    # Two "processes": two clients, each with its own connections and its own store object.
    async with redkit.connect(redis_url, namespace) as other:
        here, there = rk.sessions(idle_ttl=600), other.sessions(idle_ttl=600)
        mine = [await here.create(f"u{i}") for i in range(3)]
        theirs = [await there.create(f"v{i}") for i in range(2)]
        for s in mine:
            assert await there.get(s.id) is not None  # used by both: still one session
        for s in theirs:
            assert await there.get(s.id) is not None
        assert await there.revoke(theirs[0].id)
        # A third reader with nothing pending of its own sees both processes' notes once
        # their timers flushed them.
        async with redkit.connect(redis_url, namespace) as reader:
            seen = await _settled(reader.sessions(), 5)
            assert seen == SessionActivity(minutes=5, active=5, created=5, revoked=1)
            assert await reader.sessions().active_count(60) == 5


async def test_a_session_read_stays_one_round_trip_and_writes_no_activity(
    rk: redkit.Redkit, commands: CommandCounter
) -> None:
    store = rk.sessions(idle_ttl=600)
    store.activity_flush_interval = 3600  # no timer flush inside this test
    sessions = [await store.create(f"u{i}") for i in range(4)]
    pipeline = rk.pipeline
    assert pipeline is not None
    before, trips = await commands.snapshot(), pipeline.round_trips
    for _ in range(5):
        for s in sessions:
            assert await store.get(s.id) is not None
    assert pipeline.round_trips - trips == 20  # one round trip per read, as before
    ran = await commands.since(before)
    assert ran["pfadd"] == 0
    assert ran["hincrby"] == 0
    # The notes go in one script: one PFADD for four distinct sessions read twenty times.
    before = await commands.snapshot()
    await store.flush_activity()
    ran = await commands.since(before)
    assert ran["pfadd"] == 1
    assert ran["hincrby"] == 1  # the four creations
    assert await store.active_count() == 4


async def test_the_notes_in_memory_stay_bounded_and_lose_nothing(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=600)
    store.activity_flush_interval = 3600
    store.activity_pending_max = 8
    sizes = []
    for i in range(30):
        await store.create(f"u{i}")
        sizes.append(len(store._used))
    assert max(sizes) < 8  # full notes are sent at once, not kept
    got = await store.activity()
    # A HyperLogLog is exact in practice at this size (one register collision at most).
    assert abs(got.active - 30) <= 1
    assert got.created == 30


@pytest.mark.cluster
async def test_activity_lives_in_expiring_per_minute_buckets_of_one_slot(
    rk: redkit.Redkit,
) -> None:
    store = rk.sessions(idle_ttl=600, name="admin")
    s = await store.create("alice")
    assert await store.revoke(s.id)
    await store.flush_activity()
    base = rk.keys.group("sessact", "admin").key()
    keys = [k.decode() async for k in rk.redis.scan_iter(match=f"{base}:*")]
    assert sorted(k.rsplit(":", 2)[1] for k in keys) == ["c", "h"]
    assert {key_slot(k) for k in keys} == {key_slot(base)}
    for key in keys:
        # Bounded: gone ACTIVITY_MINUTES after its minute ends.
        assert 0 < await rk.redis.pttl(key) <= (ACTIVITY_MINUTES + 1) * 60_000
    # No token and no token hash is readable there: a HyperLogLog keeps registers only.
    for key in keys:
        raw = await rk.redis.dump(key)
        assert raw is not None
        assert s.id.encode() not in raw
    # Another store of the namespace counts apart.
    assert await rk.sessions().active_count() == 0


async def test_a_window_counts_only_its_own_minutes(rk: redkit.Redkit) -> None:
    counts = None
    for attempt in range(3):  # bounded: again only if a minute ended in the middle
        store = rk.sessions(idle_ttl=600, name=f"w{attempt}")
        base = rk.keys.group("sessact", store.name).key()
        began, _ = await rk.redis.time()
        minute = int(began) // 60
        await store.create("alice")
        await store.flush_activity()
        # Sessions seen three minutes ago, as an earlier flush would have left them.
        await rk.redis.pfadd(f"{base}:h:{minute - 3}", "0123456789abcdef", "fedcba9876543210")
        await rk.redis.pexpire(f"{base}:h:{minute - 3}", 600_000)
        counts = (await store.active_count(1), await store.active_count(5))
        ended, _ = await rk.redis.time()
        if int(ended) // 60 == minute:
            break
    assert counts == (1, 3)


async def test_activity_refuses_a_window_it_does_not_keep(rk: redkit.Redkit) -> None:
    store = rk.sessions()
    for bad in (0, ACTIVITY_MINUTES + 1, -1, True, 2.5, "5"):
        with pytest.raises(InvalidInput):
            await store.activity(bad)  # type: ignore[arg-type]


@pytest.mark.cluster
async def test_counts_read_at_once_all_see_the_notes_taken_before_them(
    rk: redkit.Redkit,
) -> None:
    # The dashboard reads two windows at once: the second call found nothing left to flush
    # and counted before the first call's flush had landed (seen: 60-minute count 0 of 2).
    store = rk.sessions(name="together")
    for user in ("ada", "bob"):
        await store.create(user, {})
    found = await asyncio.gather(*(store.activity(m) for m in (5, 60, 1, 30, 2, 10)))
    assert [(a.active, a.created) for a in found] == [(2, 2)] * 6
