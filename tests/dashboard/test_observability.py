"""The views' new figures over real HTTP: the most limited keys, entries per tag, a lock's
holder, fencing token and waiters."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

import redkit
from dashboard.helpers import make_app, serve


async def admin(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, headers={"accept": "text/html", "x-role": "admin"}, timeout=10
    )


async def token_of(c: httpx.AsyncClient) -> str:
    await c.get("/")
    token = c.cookies.get("redkit_dashboard_csrf")
    assert token
    return token


def rows(html: str, table: str) -> list[str]:
    match = re.search(rf'<table class="{table}"[^>]*>(.*?)</table>', html, re.S)
    assert match, f"no table {table!r}"
    return re.findall(r"<tr data-\w+=\"([^\"]*)\"", match.group(1))


async def test_the_rate_limits_view_ranks_the_most_limited_keys_and_resets_one(
    rk: redkit.Redkit,
) -> None:
    limiter = rk.rate_limiter(limit=1, window=60, name="api")
    for key, times in (("ip:203.0.113.9", 4), ("ip:198.51.100.2", 2)):
        for _ in range(times):
            await limiter.hit(key)
    app = make_app(rk, limiters={"api": limiter})
    async with serve(app) as url, await admin(url) as c:
        page = await c.get("/limits")
        assert page.status_code == 200
        assert rows(page.text, "top-limited") == ["ip:203.0.113.9", "ip:198.51.100.2"]
        assert "<td>3</td>" in page.text
        assert (
            'data-action="limits.reset" data-limiter="api" data-key="ip:203.0.113.9"' in page.text
        )
        reply = await c.post(
            "/actions/limits.reset",
            json={"limiter": "api", "key": "ip:203.0.113.9"},
            headers={"x-csrf-token": await token_of(c)},
        )
        assert reply.status_code == 200, reply.text
        page = await c.get("/limits")
        assert rows(page.text, "top-limited") == ["ip:198.51.100.2"]
    assert (await limiter.hit("ip:203.0.113.9")).allowed


async def test_a_limiter_that_limited_nobody_says_so(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(limit=5, window=60, name="quiet")
    app = make_app(rk, limiters={"quiet": limiter})
    async with serve(app) as url, await admin(url) as c:
        page = await c.get("/limits")
        assert "No key was limited by quiet in the last minutes." in page.text


async def test_the_most_limited_keys_are_escaped(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(limit=1, window=60, name="api")
    hostile = '<script>alert("x")</script>'
    await limiter.hit(hostile)
    await limiter.hit(hostile)
    async with serve(make_app(rk, limiters={"api": limiter})) as url, await admin(url) as c:
        page = await c.get("/limits")
        assert hostile not in page.text
        assert "&lt;script&gt;" in page.text


@pytest.mark.cluster
async def test_the_cache_view_counts_entries_per_tag_and_invalidates_one(
    rk: redkit.Redkit,
) -> None:
    cache = rk.cache(name="pages")
    await asyncio.gather(
        *(cache.set(f"u1:{i}", i, tags=["user:1"]) for i in range(4)),
        cache.set("u2", 1, tags=["user:2"]),
    )
    async with serve(make_app(rk, caches={"pages": cache})) as url, await admin(url) as c:
        page = await c.get("/cache")
        assert page.status_code == 200
        assert rows(page.text, "tags") == ["user:1", "user:2"]
        assert "<td>4</td>" in page.text
        reply = await c.post(
            "/actions/cache.invalidate",
            json={"cache": "pages", "tag": "user:1"},
            headers={"x-csrf-token": await token_of(c)},
        )
        assert reply.json()["message"] == "4 entries invalidated"
        page = await c.get("/cache")
        assert rows(page.text, "tags") == ["user:2"]


async def test_a_cache_without_tags_says_how_to_tag(rk: redkit.Redkit) -> None:
    cache = rk.cache(name="plain")
    await cache.set("k", 1)
    async with serve(make_app(rk, caches={"plain": cache})) as url, await admin(url) as c:
        page = await c.get("/cache")
        assert "No live entry of plain has a tag." in page.text


@pytest.mark.cluster
async def test_the_locks_view_shows_holder_fence_and_waiters(
    rk: redkit.Redkit,
) -> None:
    lock = rk.lock("deploy:p1", ttl=30)
    await lock.acquire()
    waiter = asyncio.create_task(rk.lock("deploy:p1", timeout=10).acquire())
    queue = rk.keys.group("lock", "deploy:p1").key("queue")
    for _ in range(200):  # bounded: until the waiter is queued
        if await rk.redis.zcard(queue):
            break
        await asyncio.sleep(0.01)
    try:
        async with serve(make_app(rk)) as url, await admin(url) as c:
            page = await c.get("/locks")
            row = re.search(r'<tr data-lock="deploy:p1">(.*?)</tr>', page.text, re.S)
            assert row, page.text
            cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(1), re.S)
            assert lock._token is not None
            assert lock._token[:8] in cells[2]
            assert lock._token not in page.text  # never the whole token: it could release
            assert cells[3] == str(lock.fencing_token)
            assert cells[4].endswith((" ms", " s"))  # held for, by the server's clock
            assert cells[5].endswith(" s")  # lease left
            assert cells[6] == "1"
            assert "Force release" in cells[7]
            assert "data-confirm=" in cells[7]
            reply = await c.post(
                "/actions/lock.release",
                json={"name": "deploy:p1"},
                headers={"x-csrf-token": await token_of(c)},
            )
            assert reply.json()["message"] == "released"
            await asyncio.wait_for(waiter, 5)  # the first waiter was woken and holds it
            page = await c.get("/locks")
            assert 'data-lock="deploy:p1"' in page.text  # now held by the former waiter
    finally:
        waiter.cancel()
