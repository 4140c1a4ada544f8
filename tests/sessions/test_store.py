"""The session store: create, get, update, rotate, revoke, revoke_all, list, bad input."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

import redkit
from redkit.sessions import Session, SessionActivity, SessionStore


@pytest.fixture
def store(rk: redkit.Redkit) -> SessionStore:
    return rk.sessions(idle_ttl=60, absolute_ttl=600)


@pytest.mark.cluster
async def test_a_created_session_reads_back_with_its_data_and_metadata(
    store: SessionStore,
) -> None:
    before = time.time()
    s = await store.create("alice", {"name": "Alice", "roles": ["admin"]}, "10.0.0.1", "curl/8")
    got = await store.get(s.id)
    assert got is not None
    assert got.id == s.id
    assert got.user_id == "alice"
    assert got.data == {"name": "Alice", "roles": ["admin"]} == s.data
    assert (got.ip, got.user_agent) == ("10.0.0.1", "curl/8")
    # Server clock; allow for a small skew between this process and the server.
    assert abs(got.created_at - before) < 5
    assert got.expires_at == pytest.approx(got.last_seen_at + 60, abs=0.01)
    assert got.absolute_expires_at == pytest.approx(got.created_at + 600, abs=0.01)
    assert s.id not in repr(got)
    assert got.id_prefix in repr(got)


async def test_an_unknown_id_is_none_and_require_raises(store: SessionStore) -> None:
    s = await store.create("alice", {})
    assert await store.require(s.id) == await store.get(s.id)
    await store.revoke(s.id)
    assert await store.get(s.id) is None
    with pytest.raises(redkit.SessionNotFound, match="sign in again"):
        await store.require(s.id)
    assert await store.get("") is None
    assert await store.get(None) is None  # type: ignore[arg-type]


@pytest.mark.cluster
async def test_update_merges_fields_and_removes_the_named_ones(store: SessionStore) -> None:
    s = await store.create("bob", {"a": 1, "b": 2})
    updated = await store.update(s.id, {"b": 20, "c": {"x": None}}, remove=["a"])
    assert updated.data == {"b": 20, "c": {"x": None}}
    got = await store.get(s.id)
    assert got is not None
    assert got.data == updated.data
    # Removing a field that is not there, or updating nothing, is harmless.
    assert (await store.update(s.id, remove=["zzz"])).data == updated.data


@pytest.mark.cluster
async def test_values_survive_merges_exactly(store: SessionStore) -> None:
    tricky = {
        "big": 2**62 + 1,
        "float": 0.1 + 0.2,
        "text": 'naïve "quoted" / \\ \n \u0000 😀',
        "nested": {"a": [1, None, True, {"b": 1e-300}]},
        "empty": {},
    }
    s = await store.create("zoe", tricky)
    await store.update(s.id, {"more": [2**53 + 1]})
    got = await store.get(s.id)
    assert got is not None
    assert got.data == {**tricky, "more": [2**53 + 1]}
    assert s.data == tricky


@pytest.mark.cluster
async def test_concurrent_updates_of_different_fields_all_survive(store: SessionStore) -> None:
    s = await store.create("carol", {"base": True})
    await asyncio.gather(*(store.update(s.id, {f"field{i}": i}) for i in range(50)))
    got = await store.get(s.id)
    assert got is not None
    assert got.data == {"base": True, **{f"field{i}": i for i in range(50)}}


@pytest.mark.cluster
async def test_rotation_gives_a_new_id_and_the_old_one_stops_working(
    store: SessionStore,
) -> None:
    s = await store.create("dave", {"cart": [1, 2]}, ip="1.1.1.1")
    rotated = await store.rotate(s.id)
    assert rotated.id != s.id
    assert await store.get(s.id) is None
    got = await store.get(rotated.id)
    assert got is not None
    assert (got.user_id, got.data, got.ip) == ("dave", {"cart": [1, 2]}, "1.1.1.1")
    # Same session: rotation never extends the absolute deadline.
    assert got.created_at == s.created_at
    assert got.absolute_expires_at == s.absolute_expires_at
    listed = await store.list("dave")
    assert [info.id_prefix for info in listed] == [rotated.id_prefix]
    with pytest.raises(redkit.SessionNotFound):
        await store.rotate(s.id)
    with pytest.raises(redkit.SessionNotFound):
        await store.update(s.id, {"x": 1})


@pytest.mark.cluster
async def test_revoke_ends_one_session_and_says_whether_it_was_live(
    store: SessionStore,
) -> None:
    a = await store.create("erin", {})
    b = await store.create("erin", {})
    assert await store.revoke(a.id) is True
    assert await store.revoke(a.id) is False
    assert await store.revoke("not-a-session") is False
    assert await store.get(a.id) is None
    assert await store.get(b.id) is not None
    assert [info.id_prefix for info in await store.list("erin")] == [b.id_prefix]


@pytest.mark.cluster
async def test_revoke_all_ends_every_session_of_that_user_and_no_other(
    store: SessionStore,
) -> None:
    mine = [await store.create("frank", {"n": i}) for i in range(5)]
    other = await store.create("grace", {})
    assert await store.revoke_all("frank") == 5
    for s in mine:
        assert await store.get(s.id) is None
    assert await store.list("frank") == []
    assert await store.get(other.id) is not None
    assert await store.revoke_all("frank") == 0


@pytest.mark.cluster
async def test_list_shows_prefix_ip_agent_and_times_oldest_first(store: SessionStore) -> None:
    first = await store.create("heidi", {"secret": "x"}, ip="10.0.0.1", user_agent="Firefox")
    await asyncio.sleep(0.002)  # distinct creation milliseconds
    second = await store.create("heidi", {}, ip="10.0.0.2")
    infos = await store.list("heidi")
    assert [i.id_prefix for i in infos] == [first.id_prefix, second.id_prefix]
    assert (infos[0].ip, infos[0].user_agent) == ("10.0.0.1", "Firefox")
    assert (infos[1].ip, infos[1].user_agent) == ("10.0.0.2", None)
    assert infos[0].created_at <= infos[1].created_at
    assert infos[0].expires_at == pytest.approx(first.expires_at, abs=0.01)
    # A list entry carries no token and no data.
    assert first.id not in repr(infos)
    assert "secret" not in repr(infos)
    assert await store.list("nobody") == []


@pytest.mark.cluster
async def test_max_per_user_evicts_the_oldest_session(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=60, absolute_ttl=600, max_per_user=3)
    made = []
    for i in range(5):
        made.append(await store.create("ivan", {"n": i}))
        await asyncio.sleep(0.002)  # distinct creation milliseconds: a defined "oldest"
    assert [await store.get(s.id) is not None for s in made] == [False, False, True, True, True]
    assert [i.id_prefix for i in await store.list("ivan")] == [s.id_prefix for s in made[2:]]


async def test_redis_holds_no_live_session_token(rk: redkit.Redkit, store: SessionStore) -> None:
    s = await store.create("judy", {"k": "v"})
    secret = s.id.split(".")[0]
    dumped = []
    async for key in rk.redis.scan_iter(match=rk.keys.pattern):
        dumped.append(key)
        kind = await rk.redis.type(key)
        if kind == b"hash":
            dumped += [x for pair in (await rk.redis.hgetall(key)).items() for x in pair]
        elif kind == b"zset":
            dumped += await rk.redis.zrange(key, 0, -1)
    blob = b" ".join(dumped)
    assert len(dumped) > 3
    assert secret[16:].encode() not in blob  # only the displayable 8-character prefix is kept
    assert s.id.encode() not in blob


async def test_bad_input_is_refused_before_anything_is_written(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    with pytest.raises(redkit.InvalidInput, match="not JSON-serialisable"):
        await store.create("kim", {"when": object()})
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        await store.create("", {})
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        await store.create(None, {})  # type: ignore[arg-type]
    with pytest.raises(redkit.InvalidInput, match="mapping"):
        await store.create("kim", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(redkit.InvalidInput, match="ip"):
        await store.create("kim", {}, ip="x" * 100)
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        await store.revoke_all("")
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        await store.list("")
    assert [k async for k in rk.redis.scan_iter(match=rk.keys.pattern)] == []


async def test_session_data_is_capped_and_the_cap_is_configurable(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=60, absolute_ttl=600, max_bytes=1000)
    with pytest.raises(redkit.InvalidInput, match="1,000-byte cap"):
        await store.create("lee", {"blob": "x" * 1000})
    s = await store.create("lee", {"a": "x" * 400})
    # Each update is small, but the merged session would pass the cap: refused, unchanged.
    await store.update(s.id, {"b": "y" * 400})
    with pytest.raises(redkit.InvalidInput, match="after this update"):
        await store.update(s.id, {"c": "z" * 400})
    got = await store.get(s.id)
    assert got is not None
    assert set(got.data) == {"a", "b"}
    # Replacing a field counts its new size, not both.
    await store.update(s.id, {"b": "w" * 450})
    assert rk.sessions(max_bytes=10_000_000).max_bytes == 10_000_000


def test_store_options_are_checked(rk: redkit.Redkit) -> None:
    with pytest.raises(redkit.InvalidInput, match="touch_every"):
        rk.sessions(idle_ttl=10, touch_every=10)
    with pytest.raises(redkit.InvalidInput, match="max_per_user"):
        rk.sessions(max_per_user=0)
    with pytest.raises(redkit.InvalidInput, match="idle_ttl"):
        rk.sessions(idle_ttl=-1)
    store = rk.sessions(idle_ttl=timedelta(hours=1), absolute_ttl=timedelta(days=1))
    assert (store.idle_ttl, store.absolute_ttl, store.touch_every) == (3600, 86400, 360)
    assert "touch_every=360s" in repr(store)


def test_a_session_repr_never_shows_the_token() -> None:
    s = Session("A" * 43 + ".0abc", "u", {}, 0, 0, 1, 2)
    assert "A" * 9 not in repr(s)
    assert "AAAAAAAA…" in repr(s)


async def test_activity_counts_the_sessions_created_used_and_revoked(store: SessionStore) -> None:
    alice = await store.create("alice")
    bob = await store.create("bob")
    assert await store.get(alice.id) is not None
    assert await store.revoke(bob.id)
    assert await store.activity() == SessionActivity(minutes=5, active=2, created=2, revoked=1)
