"""``redkit.django.RedkitCache`` against Django's expectations of a cache backend (the cases of
Django's own backend tests, written afresh), on the suite's real servers, and what it adds:
tags, a ``clear()`` that leaves other data alone, single-flight ``get_or_set``, JSON by default."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.cache import CacheKeyWarning, caches
from django.http import HttpResponse
from django.test import AsyncClient, Client
from django.test.utils import override_settings

import redkit.sync
from django_.conftest import backend
from redkit.django import RedkitCache
from redkit.errors import ConfigurationError, InvalidInput

pytestmark = pytest.mark.cluster


# -- Django's contract: the sync API -------------------------------------------------------------


def test_a_value_set_is_got_back_and_a_missing_key_gives_the_default(cache: RedkitCache) -> None:
    cache.set("greeting", "hello")
    assert cache.get("greeting") == "hello"
    assert cache.get("absent") is None
    assert cache.get("absent", "fallback") == "fallback"
    assert cache.has_key("greeting")
    assert "greeting" in cache
    assert "absent" not in cache


def test_json_values_of_every_kind_round_trip(cache: RedkitCache) -> None:
    values: dict[str, Any] = {
        "string": "café ☕",
        "int": 42,
        "negative": -7,
        "float": 1.5,
        "bool": True,
        "none": None,
        "list": [1, "two", [3]],
        "dict": {"a": {"b": [1, 2]}},
        "bytes": b"\x00\xffraw",
        "empty": "",
    }
    for key, value in values.items():
        cache.set(key, value)
    assert {key: cache.get(key, "missing") for key in values} == values


def test_add_stores_only_when_the_key_has_no_value(cache: RedkitCache) -> None:
    assert cache.add("k", "first")
    assert not cache.add("k", "second")
    assert cache.get("k") == "first"
    cache.delete("k")
    assert cache.add("k", "third")
    assert cache.get("k") == "third"


def test_add_with_a_zero_timeout_stores_nothing(cache: RedkitCache) -> None:
    assert not cache.add("k", "v", timeout=0)
    assert cache.get("k") is None


def test_add_is_atomic_under_concurrent_callers(cache: RedkitCache) -> None:
    barrier = threading.Barrier(8)
    won: list[bool] = []

    def racer(i: int) -> None:
        barrier.wait(timeout=30)
        won.append(cache.add("once", i))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert won.count(True) == 1
    assert isinstance(cache.get("once"), int)


def test_delete_says_whether_the_key_was_there(cache: RedkitCache) -> None:
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k") is None


def test_get_many_returns_only_the_keys_that_have_values(cache: RedkitCache) -> None:
    cache.set_many({"a": 1, "b": 2, "c": None})
    assert cache.get_many(["a", "b", "c", "d"]) == {"a": 1, "b": 2, "c": None}
    assert cache.get_many(iter(["a"])) == {"a": 1}


def test_set_many_reports_no_failed_keys_and_delete_many_removes_them(cache: RedkitCache) -> None:
    assert cache.set_many({"a": 1, "b": 2, "c": 3}) == []
    cache.delete_many(["a", "b"])
    assert cache.get_many(["a", "b", "c"]) == {"c": 3}


def test_incr_and_decr_add_to_an_integer_and_keep_its_expiry(
    cache: RedkitCache, raw: redkit.sync.Redkit
) -> None:
    cache.set("n", 10, timeout=100)
    assert cache.incr("n") == 11
    assert cache.incr("n", 10) == 21
    assert cache.decr("n") == 20
    assert cache.decr("n", 30) == -10
    assert cache.get("n") == -10
    entry = cache._sync().keys_for(cache.make_key("n")).entry
    assert 0 < raw.redis.pttl(entry) <= 100_000


def test_incr_of_a_missing_key_raises_value_error(cache: RedkitCache) -> None:
    with pytest.raises(ValueError, match="not found"):
        cache.incr("absent")
    with pytest.raises(ValueError, match="not found"):
        cache.decr("absent")
    assert cache.get("absent") is None


def test_incr_of_a_value_that_is_not_an_integer_is_refused(cache: RedkitCache) -> None:
    cache.set("s", "text")
    cache.set("f", 1.5)
    cache.set("b", True)
    for key in ("s", "f", "b"):
        with pytest.raises(InvalidInput, match="not an integer"):
            cache.incr(key)
    assert cache.get("s") == "text"
    with pytest.raises(InvalidInput):
        cache.incr("s", 1.5)  # type: ignore[arg-type]


def test_incr_is_atomic_under_concurrent_callers(cache: RedkitCache) -> None:
    cache.set("hits", 0)
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait(timeout=30)
        for _ in range(25):
            cache.incr("hits")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert cache.get("hits") == 200


def test_incr_refuses_to_leave_the_exact_integer_range(cache: RedkitCache) -> None:
    cache.set("big", 2**53 - 1)
    assert cache.incr("big") == 2**53
    with pytest.raises(InvalidInput, match="range"):
        cache.incr("big", 2)
    assert cache.get("big") == 2**53


def test_an_entry_expires_after_its_timeout(cache: RedkitCache) -> None:
    cache.set("short", "v", timeout=0.3)
    assert cache.add("short_add", "v", timeout=0.3)
    assert cache.get("short") == "v"
    time.sleep(0.5)
    assert cache.get("short") is None
    assert not cache.has_key("short_add")
    assert cache.add("short_add", "again")


def test_a_zero_or_negative_timeout_deletes_instead_of_storing(cache: RedkitCache) -> None:
    cache.set("k", "v")
    cache.set("k", "w", timeout=0)
    assert cache.get("k") is None
    cache.set("k", "v")
    cache.set("k", "w", timeout=-1)
    assert cache.get("k") is None


def test_a_timeout_of_none_stores_for_max_timeout_not_unbounded(
    cache: RedkitCache, raw: redkit.sync.Redkit
) -> None:
    cache.set("forever", "v", timeout=None)
    entry = cache._sync().keys_for(cache.make_key("forever")).entry
    assert 364 * 24 * 3600 * 1000 < raw.redis.pttl(entry) <= 365 * 24 * 3600 * 1000
    cache.set("forever", "v", timeout=10 * 365 * 24 * 3600)
    assert raw.redis.pttl(entry) <= 365 * 24 * 3600 * 1000


def test_the_default_timeout_comes_from_settings(
    caches_config: dict[str, Any], raw: redkit.sync.Redkit, redis_url: str, namespace: str
) -> None:
    config = {"default": backend(redis_url, namespace, TIMEOUT=42)}
    with override_settings(CACHES=config):
        cache = caches["default"]
        cache.set("k", "v")
        entry = cache._sync().keys_for(cache.make_key("k")).entry
        assert 40_000 < raw.redis.pttl(entry) <= 42_000
        cache.disconnect()


def test_touch_gives_a_new_expiry_and_fails_for_a_missing_key(
    cache: RedkitCache, raw: redkit.sync.Redkit
) -> None:
    cache.set("k", "v", timeout=0.3)
    assert cache.touch("k", 60)
    time.sleep(0.5)
    assert cache.get("k") == "v"
    entry = cache._sync().keys_for(cache.make_key("k")).entry
    assert 50_000 < raw.redis.pttl(entry) <= 60_000
    assert not cache.touch("absent")
    assert cache.touch("k", 0)
    assert cache.get("k") is None


def test_an_entry_touched_past_its_first_timeout_is_still_invalidated_by_its_tag(
    cache: RedkitCache,
) -> None:
    cache.set("k", "v", timeout=0.3, tags=["t"])
    assert cache.touch("k", 60)
    time.sleep(0.5)
    assert cache.invalidate("t") == 1
    assert cache.get("k") is None


def test_versions_keep_separate_values_and_incr_version_moves_one(cache: RedkitCache) -> None:
    cache.set("k", "v1", version=1)
    cache.set("k", "v2", version=2)
    assert cache.get("k") == "v1"
    assert cache.get("k", version=2) == "v2"
    assert cache.incr_version("k", version=2) == 3
    assert cache.get("k", version=2) is None
    assert cache.get("k", version=3) == "v2"
    assert cache.decr_version("k", version=3) == 2
    assert cache.get("k", version=2) == "v2"


def test_key_prefixes_keep_two_caches_apart(project: dict[str, RedkitCache]) -> None:
    site, other = project["default"], project["other"]
    site.set("k", "site")
    other.set("k", "other")
    assert site.get("k") == "site"
    assert other.get("k") == "other"


def test_a_custom_key_function_is_used(
    redis_url: str, namespace: str, raw: redkit.sync.Redkit
) -> None:
    config = {
        "default": backend(redis_url, namespace, KEY_FUNCTION="django_.test_cache.reverse_key"),
        "plain": backend(redis_url, namespace),
    }
    with override_settings(CACHES=config):
        custom, plain = caches["default"], caches["plain"]
        custom.set("k", "custom")
        assert custom.get("k") == "custom"
        assert plain.get("k") is None
        assert custom.make_key("k") == "k:1:site"
        custom.disconnect()
        plain.disconnect()


def reverse_key(key: str, key_prefix: str, version: int) -> str:
    return f"{key}:{version}:{key_prefix}"


def test_keys_memcached_would_refuse_are_fine_and_do_not_warn(cache: RedkitCache) -> None:
    long_key = "x" * 400
    odd_key = "with space\nand newline"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        cache.set(long_key, 1)
        cache.set(odd_key, 2)
    assert cache.get(long_key) == 1
    assert cache.get(odd_key) == 2


def test_get_or_set_stores_the_default_or_the_result_of_calling_it(cache: RedkitCache) -> None:
    assert cache.get_or_set("plain", "default") == "default"
    assert cache.get_or_set("plain", "other") == "default"
    assert cache.get_or_set("called", lambda: "computed") == "computed"
    assert cache.get_or_set("called", lambda: "again") == "computed"
    assert cache.get_or_set("versioned", "v2", version=2) == "v2"
    assert cache.get("versioned") is None
    assert cache.get("versioned", version=2) == "v2"


def test_get_or_set_with_a_zero_timeout_computes_and_stores_nothing(cache: RedkitCache) -> None:
    assert cache.get_or_set("k", lambda: "v", timeout=0) == "v"
    assert cache.get("k") is None


def test_get_or_set_computes_once_for_concurrent_misses(cache: RedkitCache) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(8)
    release = threading.Event()
    results: list[Any] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        release.wait(timeout=5)  # the others arrive while this one computes
        return {"n": len(calls)}

    def caller() -> None:
        barrier.wait(timeout=30)
        results.append(cache.get_or_set("report", compute, 60))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert calls == [1]
    assert results == [{"n": 1}] * 8


def test_get_or_set_releases_the_lock_when_the_computation_fails(cache: RedkitCache) -> None:
    def broken() -> str:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        cache.get_or_set("k", broken)
    # Not locked out: the next caller computes at once rather than waiting for the lock.
    assert cache.get_or_set("k", lambda: "ok") == "ok"


def test_a_value_computed_across_an_invalidation_of_its_tag_is_returned_but_not_stored(
    cache: RedkitCache,
) -> None:
    def compute() -> str:
        cache.invalidate("prices")
        return "stale"

    assert cache.get_or_set("price", compute, tags=["prices"]) == "stale"
    assert cache.get("price") is None


# -- what redkit adds: tags, a clear() of its own, JSON unless pickle is asked for ----------------


def test_invalidate_deletes_every_entry_of_a_tag_and_nothing_else(cache: RedkitCache) -> None:
    cache.set("a", 1, tags=["user:1"])
    cache.set("b", 2, tags=["user:1", "team:9"])
    cache.set_many({"c": 3}, tags=["team:9"])
    cache.add("d", 4, tags=["user:1"])
    cache.set("e", 5)
    assert cache.invalidate("user:1") == 3
    assert cache.get_many(["a", "b", "c", "d", "e"]) == {"c": 3, "e": 5}
    assert cache.invalidate("team:9", "nobody") == 1
    assert cache.invalidate() == 0


def test_tags_of_one_key_prefix_do_not_reach_another(project: dict[str, RedkitCache]) -> None:
    site, other = project["default"], project["other"]
    site.set("k", 1, tags=["t"])
    other.set("k", 2, tags=["t"])
    assert site.invalidate("t") == 1
    assert other.get("k") == 2


def test_clear_deletes_only_this_caches_entries_never_the_rest_of_the_database(
    project: dict[str, RedkitCache], raw: redkit.sync.Redkit
) -> None:
    site, other = project["default"], project["other"]
    sessions = raw.sessions()
    session = sessions.create("alice", {"theme": "dark"})
    raw.redis.set(raw.keys.key("unrelated"), "keep me")
    site.set_many({"a": 1, "b": 2})
    site.set("c", 3, version=7, tags=["t"])
    other.set("a", "other's")
    site.clear()
    assert site.get_many(["a", "b"]) == {}
    assert site.get("c", version=7) is None
    assert other.get("a") == "other's"
    assert sessions.get(session.id) is not None
    assert raw.redis.get(raw.keys.key("unrelated")) == b"keep me"
    site.set("a", "after")
    assert site.get("a") == "after"


def test_values_that_are_not_json_are_refused_by_default(cache: RedkitCache) -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        cache.set("when", {1, 2})
    with pytest.raises(InvalidInput, match="JSON"):
        cache.set("obj", object())
    assert cache.get("when") is None
    # What orjson writes (a datetime, a UUID, a dataclass) comes back as JSON reads it.
    cache.set("at", datetime(2026, 1, 2, tzinfo=UTC))
    assert cache.get("at") == "2026-01-02T00:00:00+00:00"


def test_pickle_only_when_asked_and_never_read_by_a_json_cache(
    project: dict[str, RedkitCache],
) -> None:
    pickled, plain = project["pickled"], project["default"]
    when = datetime(2026, 1, 2, tzinfo=UTC)
    pickled.set("when", {"at": when, "span": timedelta(hours=1), "pair": (1, 2)})
    assert pickled.get("when") == {"at": when, "span": timedelta(hours=1), "pair": (1, 2)}
    pickled.set("n", 1)
    assert pickled.incr("n") == 2
    # Same prefix and namespace: the JSON cache sees the entry, and refuses to unpickle it.
    with pytest.raises(InvalidInput, match="pickle"):
        plain.get("when")


async def test_an_entry_another_writer_stored_under_the_same_name_is_refused_not_a_crash(
    acache: RedkitCache,
) -> None:
    shared = (await acache._async()).rk.cache(name="django")
    await shared.set(acache.make_key("k"), "plain redkit entry")
    with pytest.raises(InvalidInput, match="NAME of its own"):
        await acache.aget("k")


def test_a_cached_page_is_served_from_the_backend_through_a_real_view(cache: RedkitCache) -> None:
    client = Client()
    first = client.get("/cached/")
    second = client.get("/cached/")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    cache.clear()
    assert client.get("/cached/").content != first.content


def test_a_cached_response_keeps_its_status_headers_and_cookies(cache: RedkitCache) -> None:
    response = HttpResponse(b"\x00body", status=201, content_type="application/octet-stream")
    response["X-Extra"] = "yes"
    response.set_cookie("seen", "1", httponly=True, max_age=60)
    cache.set("page", response)
    back = cache.get("page")
    assert isinstance(back, HttpResponse)
    assert (back.status_code, back.content, back["X-Extra"]) == (201, b"\x00body", "yes")
    assert back["Content-Type"] == "application/octet-stream"
    assert back.cookies["seen"].value == "1"
    assert back.cookies["seen"]["httponly"]


def test_a_view_computes_once_until_its_tag_is_invalidated(cache: RedkitCache) -> None:
    client = Client()
    first = client.get("/report/q1/").json()
    assert client.get("/report/q1/").json() == first
    assert client.get("/invalidate/q1/").json() == {"deleted": 1}
    assert client.get("/report/q1/").json()["n"] > first["n"]


# -- configuration ------------------------------------------------------------------------------


def test_django_redis_options_are_accepted(redis_url: str, namespace: str) -> None:
    options = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
        "COMPRESSOR": "django_redis.compressors.zlib.ZlibCompressor",
        "SOCKET_CONNECT_TIMEOUT": 5,
        "SOCKET_TIMEOUT": 5,
        "CONNECTION_POOL_KWARGS": {"max_connections": 20},
    }
    with override_settings(CACHES={"default": backend(redis_url, namespace, OPTIONS=options)}):
        cache = caches["default"]
        cache.set("big", "x" * 10_000)
        assert cache.get("big") == "x" * 10_000
        cache.clear()
        cache.disconnect()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"PARSER_CLASS": "x"}, "does not know the OPTIONS PARSER_CLASS"),
        ({"SERIALIZER": "msgpack"}, "SERIALIZER"),
        ({"COMPRESSOR": "lz4"}, "COMPRESSOR"),
        ({"CLIENT_CLASS": "django_redis.client.ShardClient"}, "CLIENT_CLASS"),
        ({"CONNECTION_POOL_KWARGS": {"ssl": True}}, "max_connections only"),
        ({"MAX_TIMEOUT": 0}, "MAX_TIMEOUT"),
    ],
)
def test_bad_options_are_reported_when_django_builds_the_backend(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedkitCache("redis://127.0.0.1:1/0", {"OPTIONS": options})


def test_a_bad_location_is_reported_when_django_builds_the_backend() -> None:
    with pytest.raises(ConfigurationError):
        RedkitCache("http://example.com", {})
    with pytest.raises(ConfigurationError):
        RedkitCache("redis://", {})
    with pytest.raises(ConfigurationError, match="one server URL"):
        RedkitCache(["redis://a:6379/0", "redis://b:6379/0"], {})


# -- the async API ------------------------------------------------------------------------------


async def test_the_async_methods_honour_the_same_contract(acache: RedkitCache) -> None:
    cache = acache
    await cache.aset("k", {"v": 1}, tags=["t"])
    assert await cache.aget("k") == {"v": 1}
    assert await cache.ahas_key("k")
    assert not await cache.aadd("k", "other")
    assert await cache.aadd("new", 5)
    assert await cache.aincr("new", 2) == 7
    assert await cache.adecr("new") == 6
    with pytest.raises(ValueError, match="not found"):
        await cache.aincr("absent")
    assert await cache.atouch("k", 60)
    assert not await cache.atouch("absent")
    assert await cache.aset_many({"a": 1, "b": 2}) == []
    assert await cache.aget_many(["a", "b", "absent"]) == {"a": 1, "b": 2}
    await cache.adelete_many(["a"])
    assert await cache.aget("a", "gone") == "gone"
    assert await cache.adelete("b")
    assert await cache.ainvalidate("t") == 1
    assert await cache.aget("k") is None
    await cache.aclear()
    assert await cache.aget("new") is None


async def test_sync_and_async_callers_share_the_entries(acache: RedkitCache) -> None:
    await acache.aset("shared", [1, 2])
    assert await asyncio.to_thread(acache.get, "shared") == [1, 2]
    await asyncio.to_thread(acache.set, "back", "from sync")
    assert await acache.aget("back") == "from sync"
    await asyncio.to_thread(acache.disconnect)


async def test_aget_or_set_computes_once_for_concurrent_misses(acache: RedkitCache) -> None:
    calls: list[int] = []
    release = asyncio.Event()

    async def compute() -> str:
        calls.append(1)
        await release.wait()
        return "value"

    tasks = [asyncio.ensure_future(acache.aget_or_set("k", compute, 60)) for _ in range(8)]
    await asyncio.sleep(0.3)
    release.set()
    assert await asyncio.gather(*tasks) == ["value"] * 8
    assert calls == [1]
    assert await acache.aget_or_set("k", lambda: "other") == "value"
    assert await acache.aget_or_set("plain", "default") == "default"


async def test_an_async_view_computes_once_through_aget_or_set(acache: RedkitCache) -> None:
    client = AsyncClient()
    first = (await client.get("/areport/q2/")).json()
    second = (await client.get("/areport/q2/")).json()
    assert first == second
    assert first["name"] == "q2"
