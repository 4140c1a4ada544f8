"""``revoke_prefix``: a user ends one of their own sessions by the prefix ``list()`` shows."""

from __future__ import annotations

import asyncio
import secrets
from itertools import count

import pytest

import redkit
import redkit.sessions.store as store_module
from redkit.sessions import MIN_PREFIX_LENGTH, AmbiguousSessionPrefix, SessionStore, tokens
from redkit.sessions.tokens import PREFIX_LENGTH, bucket_of
from sessions.counting import CommandCounter


@pytest.fixture
def store(rk: redkit.Redkit) -> SessionStore:
    return rk.sessions(idle_ttl=60, absolute_ttl=600)


def same_bucket_user(user_id: str) -> str:
    """Another user ID whose keys share ``user_id``'s bucket (hash tag), found by search."""
    wanted = bucket_of(user_id)
    for n in range(1_000_000):  # 16,384 buckets: found after ~16k tries on average
        candidate = f"neighbour-{n}"
        if bucket_of(candidate) == wanted:
            return candidate
    raise AssertionError("no user ID of that bucket in a million tries")


@pytest.mark.cluster
async def test_the_listed_prefix_ends_that_session_and_no_other(store: SessionStore) -> None:
    laptop = await store.create("ada", {}, ip="10.0.0.1", user_agent="Firefox")
    phone = await store.create("ada", {}, ip="10.0.0.2", user_agent="Safari")
    listed = {info.user_agent: info.id_prefix for info in await store.list("ada")}

    ended = await store.revoke_prefix("ada", listed["Firefox"])

    assert (ended.id_prefix, ended.ip, ended.user_agent) == (
        laptop.id_prefix,
        "10.0.0.1",
        "Firefox",
    )
    assert ended.user_id == "ada"
    assert await store.get(laptop.id) is None
    assert await store.get(phone.id) is not None
    assert [info.id_prefix for info in await store.list("ada")] == [phone.id_prefix]
    with pytest.raises(redkit.SessionNotFound):
        await store.revoke_prefix("ada", listed["Firefox"])


@pytest.mark.cluster
async def test_a_shorter_prefix_down_to_the_minimum_is_enough_when_it_names_one_session(
    store: SessionStore,
) -> None:
    s = await store.create(42, {})
    ended = await store.revoke_prefix("42", s.id[:MIN_PREFIX_LENGTH])
    assert ended.id_prefix == s.id_prefix
    assert await store.get(s.id) is None


@pytest.mark.cluster
async def test_another_users_prefix_is_unknown_and_ends_nothing_even_in_the_same_bucket(
    store: SessionStore,
) -> None:
    neighbour = same_bucket_user("mallory")
    victim = await store.create(neighbour, {})
    await store.create("mallory", {})
    for prefix in (victim.id_prefix, victim.id[:MIN_PREFIX_LENGTH]):
        with pytest.raises(redkit.SessionNotFound):
            await store.revoke_prefix("mallory", prefix)
    assert await store.get(victim.id) is not None
    assert len(await store.list(neighbour)) == 1


async def test_a_prefix_that_names_several_sessions_is_refused_and_ends_none(
    rk: redkit.Redkit, store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two real tokens that share their first six characters (by chance that takes thousands
    # of sessions): the generator is steered, the store is not.
    shared = secrets.token_urlsafe(8)[:6]
    serial = count()
    real = tokens.new_token

    def steered(bucket: str) -> str:
        token = real(bucket)
        return shared + "AB"[next(serial) % 2] + token[7:]

    monkeypatch.setattr(store_module, "new_token", steered)
    first = await store.create("bob", {})
    second = await store.create("bob", {})
    assert first.id[:6] == second.id[:6] == shared

    with pytest.raises(AmbiguousSessionPrefix, match="2 live sessions") as caught:
        await store.revoke_prefix("bob", shared)
    assert caught.value.matches == 2
    assert isinstance(caught.value, redkit.InvalidInput)
    assert await store.get(first.id) is not None
    assert await store.get(second.id) is not None

    # The full displayed prefix tells them apart.
    assert (await store.revoke_prefix("bob", second.id_prefix)).id_prefix == second.id_prefix
    assert await store.get(first.id) is not None
    assert await store.get(second.id) is None


async def test_bad_prefixes_are_refused_without_a_round_trip(
    store: SessionStore, commands: CommandCounter
) -> None:
    s = await store.create("carol", {})
    before = await commands.snapshot()
    bad: list[object] = [
        "",
        s.id[: MIN_PREFIX_LENGTH - 1],  # too short: would name a session by near-accident
        s.id[: PREFIX_LENGTH + 1],  # longer than any stored prefix: the rest is the secret
        s.id,
        "ab*d",
        "ab?d%",
        "abcd\n",
        "ab.d",
        None,
        1234,
        b"abcd",
    ]
    for prefix in bad:
        with pytest.raises(redkit.InvalidInput):
            await store.revoke_prefix("carol", prefix)  # type: ignore[arg-type]
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        await store.revoke_prefix("", s.id_prefix)
    done = await commands.since(before)
    assert done["evalsha"] == done["eval"] == 0
    assert await store.get(s.id) is not None


@pytest.mark.cluster
async def test_concurrent_revokes_of_one_prefix_end_it_once(store: SessionStore) -> None:
    s = await store.create("dave", {})
    other = await store.create("dave", {})
    results = await asyncio.gather(
        *(store.revoke_prefix("dave", s.id_prefix) for _ in range(5)), return_exceptions=True
    )
    ended = [r for r in results if isinstance(r, redkit.SessionInfo)]
    missed = [r for r in results if isinstance(r, redkit.SessionNotFound)]
    assert (len(ended), len(missed)) == (1, 4)
    assert await store.get(other.id) is not None


async def test_a_prefix_is_valid_only_in_the_store_that_made_the_session(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    admin = rk.sessions(idle_ttl=60, absolute_ttl=600, name="admin")
    s = await store.create("erin", {})
    with pytest.raises(redkit.SessionNotFound):
        await admin.revoke_prefix("erin", s.id_prefix)
    assert await store.get(s.id) is not None
