"""The ASGI middleware: what is cached, what never is, keys, ETag/304, HEAD, a real server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import redkit
from redkit.cache import Cache
from redkit.cache.middleware import CacheMiddleware, CacheRule
from redkit.embedded import ValkeyProcess, find_free_port
from servers import TEST_CONFIG
from uvicorn_server import serve_in_loop


class Backend:
    """A Starlette app that counts how often each endpoint really runs."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail = False
        self.app = Starlette(
            routes=[
                Route("/items", self.items),
                Route("/users/{user_id}", self.user),
                Route("/me", self.me),
                Route("/cookie", self.cookie),
                Route("/private", self.private),
                Route("/stream", self.stream),
                Route("/vary", self.vary),
                Route("/slow", self.slow),
                Route("/flaky", self.flaky),
            ]
        )

    def count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    async def items(self, request: Request) -> Response:
        n = self.count("items")
        return JSONResponse({"n": n, "query": sorted(request.query_params.multi_items())})

    async def user(self, request: Request) -> Response:
        n = self.count("user")
        return JSONResponse({"user": request.path_params["user_id"], "n": n})

    async def me(self, request: Request) -> Response:
        self.count("me")
        return PlainTextResponse("hello " + request.headers.get("authorization", "anonymous"))

    async def cookie(self, request: Request) -> Response:
        response = PlainTextResponse(f"cookie {self.count('cookie')}")
        response.set_cookie("session", "secret")
        return response

    async def private(self, request: Request) -> Response:
        n = self.count("private")
        return PlainTextResponse(f"private {n}", headers={"cache-control": "private"})

    async def stream(self, request: Request) -> Response:
        n = self.count("stream")

        async def chunks() -> AsyncIterator[bytes]:
            yield b"part1 "
            yield f"part2 {n}".encode()

        return StreamingResponse(chunks())

    async def vary(self, request: Request) -> Response:
        n = self.count("vary")
        return PlainTextResponse(f"vary {n}", headers={"vary": "accept-language"})

    async def slow(self, request: Request) -> Response:
        n = self.count("slow")
        await asyncio.sleep(0.2)
        return PlainTextResponse(f"slow {n}")

    async def flaky(self, request: Request) -> Response:
        n = self.count("flaky")
        if self.fail:
            return PlainTextResponse("down", status_code=503)
        return PlainTextResponse(f"flaky {n}")


RULES = [
    CacheRule("/items", ttl=60, tags=["items"]),
    CacheRule("/users/{user_id}", ttl=60, tags=["user:{user_id}"]),
    CacheRule("/me", ttl=60, per_user=True),
    CacheRule("/cookie", ttl=60),
    CacheRule("/private", ttl=60),
    CacheRule("/stream", ttl=60),
    CacheRule("/vary", ttl=60),
    CacheRule("/slow", ttl=60),
    CacheRule("/flaky", ttl=0.1, stale_if_error=30),
]


def make(cache: Cache) -> tuple[Backend, httpx.AsyncClient]:
    backend = Backend()
    app = CacheMiddleware(backend.app, cache=cache, rules=RULES)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return backend, client


@pytest.fixture
async def site(rk: redkit.Redkit) -> AsyncIterator[tuple[Backend, httpx.AsyncClient, Cache]]:
    cache = rk.cache(name="http", beta=0)
    backend, client = make(cache)
    async with client:
        yield backend, client, cache


Site = tuple[Backend, httpx.AsyncClient, Cache]


@pytest.mark.cluster
async def test_a_get_is_cached_with_etag_age_and_x_cache(site: Site) -> None:
    backend, client, cache = site
    first = await client.get("/items")
    second = await client.get("/items")
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert "age" in second.headers
    assert first.json() == second.json() == {"n": 1, "query": []}
    assert backend.calls["items"] == 1
    body_hash = hashlib.blake2b(first.content, digest_size=16).hexdigest()
    assert first.headers["etag"] == second.headers["etag"] == f'"{body_hash}"'
    assert second.headers["content-type"] == "application/json"
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.recomputes) == (1, 1, 1)


async def test_the_same_query_in_another_order_hits(site: Site) -> None:
    backend, client, _ = site
    a = await client.get("/items?b=2&a=1&a=0")
    b = await client.get("/items?a=1&a=0&b=2")
    c = await client.get("/items?a=0&a=1&b=2")  # a's values in another order: another page
    assert b.headers["x-cache"] == "HIT"
    assert a.json() == b.json()
    assert c.headers["x-cache"] == "MISS"
    assert backend.calls["items"] == 2
    other = await client.get("/items?a=1")
    assert other.headers["x-cache"] == "MISS"


async def test_etag_round_trip_gets_304(site: Site) -> None:
    _, client, _ = site
    first = await client.get("/users/7")
    etag = first.headers["etag"]
    again = await client.get("/users/7", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["x-cache"] == "HIT"
    changed = await client.get("/users/7", headers={"if-none-match": '"other"'})
    assert changed.status_code == 200
    # A miss that computes a matching body also answers 304.
    await client.get("/users/8")
    fresh = await client.get("/users/9", headers={"if-none-match": "*"})
    assert fresh.status_code == 304
    assert fresh.headers["x-cache"] == "MISS"


async def test_etag_is_the_same_in_every_process(rk: redkit.Redkit, redis_url: str) -> None:
    async with redkit.connect(redis_url, rk.namespace + "b") as other:
        _, one = make(rk.cache(name="http"))
        _, two = make(other.cache(name="http"))
        async with one, two:
            a = await one.get("/users/1")
            b = await two.get("/users/1")
            assert b.headers["x-cache"] == "MISS"  # another namespace: computed again
            assert a.headers["etag"] == b.headers["etag"]


async def test_head_is_answered_from_the_get_entry(site: Site) -> None:
    _backend, client, _ = site
    miss = await client.head("/users/3")
    assert miss.headers["x-cache"] == "MISS"
    get = await client.get("/users/3")
    head = await client.head("/users/3")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["x-cache"] == "HIT"
    assert head.headers["content-length"] == str(len(get.content))
    assert head.headers["etag"] == get.headers["etag"]


async def test_set_cookie_private_and_vary_responses_are_not_cached(site: Site) -> None:
    _backend, client, _ = site
    for path in ("/cookie", "/private", "/vary"):
        first = await client.get(path)
        client.cookies.clear()  # else the session cookie would make the next request personal
        second = await client.get(path)
        client.cookies.clear()
        assert first.headers["x-cache"] == second.headers["x-cache"] == "MISS", path
        assert first.text != second.text, path
    assert "set-cookie" in (await client.get("/cookie")).headers


async def test_streaming_responses_pass_through_uncached(site: Site) -> None:
    _backend, client, _ = site
    assert (await client.get("/stream")).text == "part1 part2 1"
    assert (await client.get("/stream")).text == "part1 part2 2"


async def test_authorization_bypasses_the_cache_unless_the_rule_is_per_user(
    site: Site,
) -> None:
    backend, client, _ = site
    await client.get("/items")
    personal = await client.get("/items", headers={"authorization": "Bearer a"})
    assert personal.headers["x-cache"] == "BYPASS"  # neither read nor written
    assert backend.calls["items"] == 2
    session = await client.get("/items", headers={"cookie": "session=abc; theme=dark"})
    assert session.headers["x-cache"] == "BYPASS"
    harmless = await client.get("/items", headers={"cookie": "theme=dark"})
    assert harmless.headers["x-cache"] == "HIT"


@pytest.mark.parametrize(
    "cookie",
    [
        "theme; session=abc",  # an item without '=' (the stdlib parser drops the whole header)
        "a=b c; session=abc",  # a value with a space
        'x="unclosed; session=abc',  # an unclosed quote
    ],
)
async def test_a_malformed_cookie_header_never_hides_a_session(site: Site, cookie: str) -> None:
    backend, client, _ = site
    response = await client.get("/items", headers={"cookie": cookie})
    assert response.headers["x-cache"] == "BYPASS"  # personal: neither read nor written
    anonymous = await client.get("/items")
    assert anonymous.headers["x-cache"] == "MISS"  # nothing of the signed-in call was stored
    assert backend.calls["items"] == 2


@pytest.mark.cluster
async def test_user_a_never_receives_user_b_cached_response(site: Site) -> None:
    _backend, client, _ = site
    a1 = await client.get("/me", headers={"authorization": "Bearer alice"})
    b1 = await client.get("/me", headers={"authorization": "Bearer bob"})
    a2 = await client.get("/me", headers={"authorization": "Bearer alice"})
    b2 = await client.get("/me", headers={"authorization": "Bearer bob"})
    anon = await client.get("/me")
    assert a1.text == a2.text == "hello Bearer alice"
    assert b1.text == b2.text == "hello Bearer bob"
    assert anon.text == "hello anonymous"
    assert [r.headers["x-cache"] for r in (a1, b1, a2, b2, anon)] == [
        "MISS",
        "MISS",
        "HIT",
        "HIT",
        "MISS",
    ]


async def test_request_no_cache_refreshes_and_no_store_bypasses(site: Site) -> None:
    _backend, client, _ = site
    await client.get("/items")
    refreshed = await client.get("/items", headers={"cache-control": "no-cache"})
    assert refreshed.headers["x-cache"] == "MISS"
    assert refreshed.json()["n"] == 2
    assert (await client.get("/items")).json()["n"] == 2  # the refresh was stored
    bypass = await client.get("/items", headers={"cache-control": "no-store"})
    assert bypass.json()["n"] == 3
    assert bypass.headers["x-cache"] == "BYPASS"


async def test_tag_invalidation_reaches_cached_responses(site: Site) -> None:
    _backend, client, cache = site
    await client.get("/users/1")
    await client.get("/users/2")
    assert await cache.invalidate("user:1") == 1
    assert (await client.get("/users/1")).headers["x-cache"] == "MISS"
    assert (await client.get("/users/2")).headers["x-cache"] == "HIT"


async def test_concurrent_misses_run_the_endpoint_once(site: Site) -> None:
    backend, client, _ = site
    responses = await asyncio.gather(*(client.get("/slow") for _ in range(20)))
    assert {r.text for r in responses} == {"slow 1"}
    assert backend.calls["slow"] == 1


async def test_stale_if_error_serves_the_last_good_response(site: Site) -> None:
    backend, client, _ = site
    assert (await client.get("/flaky")).text == "flaky 1"
    await asyncio.sleep(0.15)
    backend.fail = True
    stale = await client.get("/flaky")
    assert stale.status_code == 200
    assert stale.text == "flaky 1"
    assert stale.headers["x-cache"] == "STALE"


async def test_other_methods_and_unmatched_paths_pass_through(site: Site) -> None:
    _backend, client, _ = site
    assert (await client.post("/items")).status_code == 405
    assert (await client.get("/nowhere")).status_code == 404
    assert "x-cache" not in (await client.get("/nowhere")).headers


def test_rules_match_parameters_and_prefixes() -> None:
    rule = CacheRule("/files/{rest:path}")
    assert rule.match("/files/a/b.txt") == {"rest": "a/b.txt"}
    assert CacheRule("/api/*").match("/api/v1/x") == {}
    assert CacheRule("/u/{id}").match("/u/1/2") is None
    assert CacheRule("/u/{id}", tags=lambda p: [f"u{p['id']}"]).tags_for({"id": "1"}) == ["u1"]
    with pytest.raises(redkit.InvalidInput):
        CacheRule("no-slash")


async def test_a_real_uvicorn_server_serves_hits(rk: redkit.Redkit) -> None:
    backend = Backend()
    app: Any = CacheMiddleware(backend.app, cache=rk.cache(name="http"), rules=RULES)
    async with serve_in_loop(app, lifespan="off") as url:
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.get("/users/5?x=1&y=2")
            second = await client.get("/users/5?y=2&x=1")
            not_modified = await client.get(
                "/users/5?x=1&y=2", headers={"if-none-match": first.headers["etag"]}
            )
        assert first.headers["x-cache"] == "MISS"
        assert second.headers["x-cache"] == "HIT"
        assert second.json() == first.json()
        assert not_modified.status_code == 304
        assert backend.calls["user"] == 1


async def test_the_middleware_fails_open_when_the_server_is_gone(tmp_path: Path) -> None:
    server = ValkeyProcess(tmp_path, port=find_free_port(), config=TEST_CONFIG).start()
    try:
        async with redkit.connect(server.url, "httpfault") as rk:
            backend, client = make(rk.cache(name="http"))
            async with client:
                assert (await client.get("/items")).headers["x-cache"] == "MISS"
                assert (await client.get("/items")).headers["x-cache"] == "HIT"
                server.kill()
                down = await client.get("/items")
                assert down.status_code == 200
                assert down.json()["n"] == 2  # served by the application itself
                assert backend.calls["items"] == 2
    finally:
        server.stop()
