"""The cache middleware under attack (issue 13, items 1-4), over real uvicorn, with the
session middleware in either order: hosts, repeated parameters, revoked and renamed sessions,
declared credentials, the response's own freshness, and why a request bypassed the cache."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import redkit
from redkit.cache.middleware import CacheMiddleware, CacheRule
from redkit.sessions import SessionStore
from redkit.sessions.middleware import SessionMiddleware, current_session
from sessions.counting import CountingStore
from uvicorn_server import serve_in_loop

Order = Literal["cache-outside", "cache-inside"]
ORDERS: tuple[Order, ...] = ("cache-outside", "cache-inside")


class Site:
    """Endpoints whose answers depend on what an attacker controls; counts real runs."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def count(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    def routes(self) -> list[Route]:
        return [
            Route("/link", self.link),
            Route("/search", self.search),
            Route("/me", self.me),
            Route("/page", self.page),
            Route("/news", self.news),
            Route("/private-news", self.private_news),
            Route("/fresh", self.fresh),
            Route("/key", self.key),
            Route("/login/{user}", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    async def link(self, request: Request) -> Response:
        self.count("link")
        return JSONResponse({"self": str(request.url)})  # an absolute URL: Host and scheme

    async def search(self, request: Request) -> Response:
        self.count("search")
        return PlainTextResponse(request.query_params.get("q", ""))  # Starlette: the last

    async def me(self, request: Request) -> Response:
        session = current_session(request).session
        if session is None:
            return JSONResponse({"detail": "sign in"}, status_code=401)
        return PlainTextResponse(f"private data of {session.user_id} #{self.count('me')}")

    async def page(self, request: Request) -> Response:
        # A page that (wrongly) depends on the user under a rule that is not per-user.
        self.count("page")
        return PlainTextResponse(f"hello {current_session(request).user_id or 'anonymous'}")

    async def news(self, request: Request) -> Response:
        return PlainTextResponse(f"news #{self.count('news')}")

    async def private_news(self, request: Request) -> Response:
        n = self.count("private-news")
        return PlainTextResponse(f"news for you #{n}", headers={"cache-control": "private"})

    async def fresh(self, request: Request) -> Response:
        n = self.count("fresh")
        return PlainTextResponse(
            f"fresh #{n}", headers={"cache-control": request.query_params["cc"]}
        )

    async def key(self, request: Request) -> Response:
        self.count("key")
        return PlainTextResponse("key " + request.headers.get("x-api-key", "none"))

    async def login(self, request: Request) -> Response:
        session = await current_session(request).login(request.path_params["user"])
        return JSONResponse({"token": session.id})

    async def logout(self, request: Request) -> Response:
        return JSONResponse({"ended": await current_session(request).logout()})


RULES = [
    CacheRule("/link", ttl=60),
    CacheRule("/search", ttl=60),
    CacheRule("/me", ttl=60, per_user=True),
    CacheRule("/page", ttl=60),
    CacheRule("/fresh", ttl=60),
]


def build(
    rk: redkit.Redkit,
    store: SessionStore,
    order: Order = "cache-outside",
    *,
    rules: Sequence[CacheRule] = RULES,
    cookie_name: str = "session",
    **cache_options: Any,
) -> tuple[Site, Starlette]:
    site = Site()
    cache = Middleware(
        CacheMiddleware, cache=rk.cache(name="http", beta=0), rules=rules, **cache_options
    )
    sessions = Middleware(SessionMiddleware, store=store, cookie_name=cookie_name, secure=False)
    layers = [cache, sessions] if order == "cache-outside" else [sessions, cache]
    return site, Starlette(routes=site.routes(), middleware=layers)


def serving(app: Any, lifespan: Literal["on", "off"] = "on") -> AbstractAsyncContextManager[str]:
    return serve_in_loop(app, lifespan=lifespan)


@asynccontextmanager
async def browsing(
    app: Any, lifespan: Literal["on", "off"] = "on"
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app, lifespan) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


@pytest.fixture
def store(rk: redkit.Redkit) -> CountingStore:
    return CountingStore(rk, idle_ttl=60, absolute_ttl=3600)


# -- 1. the host and the scheme are part of the key -----------------------------------------


@pytest.mark.cluster
async def test_a_page_made_for_another_host_is_never_served_to_this_one(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site, app = build(rk, store)
    async with browsing(app) as http:
        poisoned = await http.get("/link", headers={"host": "evil.example"})
        assert poisoned.json() == {"self": "http://evil.example/link"}
        real = await http.get("/link")
        assert real.json() == {"self": str(http.base_url).rstrip("/") + "/link"}
        assert real.headers["x-cache"] == "MISS"
        assert (await http.get("/link")).headers["x-cache"] == "HIT"
        again = await http.get("/link", headers={"host": "evil.example"})
        assert again.headers["x-cache"] == "HIT"  # the attacker only poisons its own entry
        assert again.json() == {"self": "http://evil.example/link"}
    assert site.calls["link"] == 2


async def test_a_page_made_for_https_is_never_served_over_http(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site, app = build(rk, store)
    async with browsing(app) as http:
        # uvicorn trusts X-Forwarded-Proto from loopback (its default forwarded_allow_ips).
        secure = await http.get("/link", headers={"x-forwarded-proto": "https"})
        assert secure.json()["self"].startswith("https://")
        plain = await http.get("/link")
        assert plain.json()["self"].startswith("http://")
        assert plain.headers["x-cache"] == "MISS"
    assert site.calls["link"] == 2


async def test_a_forwarded_host_header_is_part_of_the_key(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site, app = build(rk, store)
    async with browsing(app) as http:
        await http.get("/link", headers={"x-forwarded-host": "evil.example"})
        assert (await http.get("/link")).headers["x-cache"] == "MISS"
    assert site.calls["link"] == 2


async def test_a_host_outside_allowed_hosts_is_never_cached(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site, app = build(rk, store, allowed_hosts=["127.0.0.1", "*.example.org"])
    async with browsing(app) as http:
        for _ in range(2):
            evil = await http.get("/link", headers={"host": "evil.example"})
            assert evil.headers["x-cache"] == "BYPASS"
        assert site.calls["link"] == 2
        assert (await http.get("/link")).headers["x-cache"] == "MISS"
        assert (await http.get("/link")).headers["x-cache"] == "HIT"
        sub = {"host": "www.example.org"}
        assert (await http.get("/link", headers=sub)).headers["x-cache"] == "MISS"
        bare = {"host": "example.org"}  # "*.example.org" means its subdomains only
        assert (await http.get("/link", headers=bare)).headers["x-cache"] == "BYPASS"


def test_allowed_hosts_are_checked(rk: redkit.Redkit) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("unreachable")

    cache = rk.cache(name="http")
    for bad in (["exa mple.com"], ["*"], [""], "example.com"):
        with pytest.raises(redkit.InvalidInput):
            CacheMiddleware(app, cache=cache, rules=RULES, allowed_hosts=bad)


# -- 2. repeated query parameters keep their order ------------------------------------------


async def test_repeated_parameters_in_another_order_are_another_page(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site, app = build(rk, store)
    async with browsing(app) as http:
        assert (await http.get("/search?q=shoes&q=boots")).text == "boots"
        other = await http.get("/search?q=boots&q=shoes")
        assert other.text == "shoes"
        assert other.headers["x-cache"] == "MISS"
        assert (await http.get("/search?q=shoes&q=boots")).headers["x-cache"] == "HIT"
        # Different names may still move: they are the same request to the application.
        assert (await http.get("/search?x=1&q=a&q=b")).text == "b"
        moved = await http.get("/search?q=a&x=1&q=b")
        assert moved.headers["x-cache"] == "HIT"
        assert moved.text == "b"
    assert site.calls["search"] == 3


async def test_a_name_spelled_another_way_is_still_the_same_name(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    _site, app = build(rk, store)
    async with browsing(app) as http:
        assert (await http.get("/search?q=a&%71=b")).text == "b"  # %71 is "q"
        assert (await http.get("/search?%71=b&q=a")).text == "a"
        assert (await http.get("/search?q=a&q+=c")).text == "a"  # "q " is another name


# -- 3. a per-user entry never outlives its session -----------------------------------------


@pytest.mark.parametrize("how", ["revoke", "revoke_all", "logout"])
@pytest.mark.parametrize("order", ORDERS)
async def test_a_revoked_session_never_gets_its_cached_page(
    rk: redkit.Redkit, store: SessionStore, order: Order, how: str
) -> None:
    site, app = build(rk, store, order)
    async with browsing(app) as http:
        token = (await http.post("/login/alice")).json()["token"]
        first = await http.get("/me")
        assert first.text == "private data of alice #1"
        assert first.headers["x-cache"] == "MISS"
        assert (await http.get("/me")).headers["x-cache"] == "HIT"
        if how == "revoke":
            assert await store.revoke(token)
        elif how == "revoke_all":
            assert await store.revoke_all("alice") == 1
        else:
            assert (await http.post("/logout")).json() == {"ended": True}
        http.cookies.clear()
        # The old cookie again (a stolen copy, another tab): the session is gone.
        after = await http.get("/me", headers={"cookie": f"session={token}"})
        assert after.status_code == 401
        assert "alice" not in after.text
        assert after.headers["x-cache"] == "BYPASS"
    assert site.calls["me"] == 1


@pytest.mark.parametrize("order", ORDERS)
async def test_a_new_session_of_the_same_user_gets_its_own_entry(
    rk: redkit.Redkit, store: SessionStore, order: Order
) -> None:
    site, app = build(rk, store, order)
    async with browsing(app) as http:
        await http.post("/login/bob")
        assert (await http.get("/me")).text == "private data of bob #1"
        await http.post("/login/bob")  # a new ID: the old entry was the old session's
        fresh = await http.get("/me")
        assert fresh.text == "private data of bob #2"
        assert fresh.headers["x-cache"] == "MISS"
    assert site.calls["me"] == 2


@pytest.mark.cluster
async def test_a_per_user_hit_outside_the_session_middleware_reads_the_store_once(
    rk: redkit.Redkit, store: CountingStore
) -> None:
    _site, app = build(rk, store, "cache-outside")
    async with browsing(app) as http:
        await http.post("/login/carol")
        for label in ("MISS", "HIT"):
            before = store.reads
            response = await http.get("/me")
            assert response.headers["x-cache"] == label
            assert store.reads - before == 1


async def test_a_per_user_entry_lives_no_longer_than_its_session(rk: redkit.Redkit) -> None:
    short = CountingStore(rk, idle_ttl=60, absolute_ttl=20)
    rules = [CacheRule("/me", ttl=60, per_user=True, stale_if_error=60)]
    site, app = build(rk, short, rules=rules)
    async with browsing(app) as http:
        await http.post("/login/dora")
        assert (await http.get("/me")).headers["x-cache"] == "MISS"
    [(fresh, _swr, pttl)] = await stored_windows(rk)
    assert 0 < fresh <= 20000  # not the rule's 60 s
    assert 0 < pttl <= 20000  # nor 60 s more of stale-if-error
    assert site.calls["me"] == 1


# -- 4. the cache knows the session layer's credentials, and the declared ones ---------------


@pytest.mark.parametrize(
    ("order", "lifespan"),
    [("cache-outside", "on"), ("cache-outside", "off"), ("cache-inside", "on")],
)
async def test_a_session_cookie_under_another_name_is_never_cached_for_anonymous_clients(
    rk: redkit.Redkit, store: SessionStore, order: Order, lifespan: Literal["on", "off"]
) -> None:
    _site, app = build(rk, store, order, cookie_name="sid")
    async with browsing(app, lifespan) as http:
        await http.post("/login/carol")
        assert "sid" in http.cookies
        signed_in = await http.get("/page")
        assert signed_in.text == "hello carol"
        assert signed_in.headers["x-cache"] == "BYPASS"
        http.cookies.clear()
        anonymous = await http.get("/page")
        assert anonymous.text == "hello anonymous"
        assert anonymous.headers["x-cache"] == "MISS"


async def test_the_session_layer_is_found_inside_an_app_that_has_not_started(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site = Site()
    inner = Starlette(
        routes=site.routes(),
        middleware=[Middleware(SessionMiddleware, store=store, cookie_name="sid", secure=False)],
    )
    app = CacheMiddleware(inner, cache=rk.cache(name="http", beta=0), rules=RULES)
    token = (await store.create("hana")).id
    async with browsing(app, "off") as http:  # no lifespan: nothing registers itself
        signed_in = await http.get("/page", headers={"cookie": f"sid={token}"})  # the 1st call
        assert signed_in.text == "hello hana"
        assert signed_in.headers["x-cache"] == "BYPASS"
        assert (await http.get("/page")).text == "hello anonymous"


async def test_declared_credential_headers_and_cookies_are_credentials(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    rules = [CacheRule("/key", ttl=60), CacheRule("/me", ttl=60, per_user=True)]
    site, app = build(
        rk, store, rules=rules, credential_headers=["X-Api-Key"], credential_cookies=["auth"]
    )
    async with browsing(app) as http:
        keyed = await http.get("/key", headers={"x-api-key": "k1"})
        assert keyed.headers["x-cache"] == "BYPASS"
        assert (await http.get("/key")).text == "key none"
        by_cookie = await http.get("/key", headers={"cookie": "auth=t1"})
        assert by_cookie.headers["x-cache"] == "BYPASS"
    assert site.calls["key"] == 3


async def test_a_declared_credential_header_keys_per_user_entries(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site, app = build(
        rk,
        store,
        rules=[CacheRule("/key", ttl=60, per_user=True)],
        credential_headers=["x-api-key"],
    )
    async with browsing(app) as http:
        a = await http.get("/key", headers={"x-api-key": "a"})
        b = await http.get("/key", headers={"x-api-key": "b"})
        a2 = await http.get("/key", headers={"x-api-key": "a"})
        assert (a.text, b.text, a2.text) == ("key a", "key b", "key a")
        assert [r.headers["x-cache"] for r in (a, b, a2)] == ["MISS", "MISS", "HIT"]
    assert site.calls["key"] == 2


@pytest.mark.parametrize(
    "cc", ["max-age=0", "s-maxage=0", "public, max-age=60, s-maxage=0", 'max-age="0"', "max-age=x"]
)
async def test_a_response_that_is_stale_at_once_is_never_stored(
    rk: redkit.Redkit, store: SessionStore, cc: str
) -> None:
    site, app = build(rk, store)
    async with browsing(app) as http:
        for n in (1, 2):
            response = await http.get("/fresh", params={"cc": cc})
            assert response.text == f"fresh #{n}"
            assert response.headers["x-cache"] == "MISS"
    assert site.calls["fresh"] == 2


async def stored_windows(rk: redkit.Redkit) -> list[tuple[int, int, int]]:
    """(fresh ms, stale-while-revalidate ms, key PTTL) of every response entry: read from
    the entry's header (``fresh:created:delta:swr|``), so no test waits for a clock."""
    out = []
    async for key in rk.redis.scan_iter(match=rk.keys.pattern, count=1000):
        if b":e:" not in key:
            continue
        raw = await rk.redis.get(key)
        assert isinstance(raw, bytes)
        fresh, created, _delta, swr = raw.split(b"|", 1)[0].split(b":")
        out.append((int(fresh) - int(created), int(swr), await rk.redis.pttl(key)))
    return out


@pytest.mark.parametrize(
    ("cc", "fresh_ms"),
    [
        ("max-age=2", 2000),
        ("max-age=60, s-maxage=3", 3000),  # a shared cache obeys s-maxage
        ("public, max-age=600", 60000),  # never longer than the rule's ttl
    ],
)
async def test_a_response_fresh_for_less_than_the_rule_s_ttl_is_stored_for_less(
    rk: redkit.Redkit, store: SessionStore, cc: str, fresh_ms: int
) -> None:
    _site, app = build(rk, store, rules=[CacheRule("/fresh", ttl=60, stale_while_revalidate=30)])
    async with browsing(app) as http:
        assert (await http.get("/fresh", params={"cc": cc})).headers["x-cache"] == "MISS"
        assert (await http.get("/fresh", params={"cc": cc})).headers["x-cache"] == "HIT"
    [(fresh, swr, _pttl)] = await stored_windows(rk)
    assert (fresh, swr) == (fresh_ms, 30000)


async def test_must_revalidate_leaves_no_stale_window(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    _site, app = build(rk, store, rules=[CacheRule("/fresh", ttl=60, stale_while_revalidate=30)])
    async with browsing(app) as http:
        await http.get("/fresh", params={"cc": "max-age=5, must-revalidate"})
    [(fresh, swr, pttl)] = await stored_windows(rk)
    assert (fresh, swr) == (5000, 0)
    assert 0 < pttl <= 5000


async def test_expires_counts_from_the_response_date(rk: redkit.Redkit) -> None:
    dates = {"date": "Tue, 01 Dec 2026 10:00:00 GMT"}

    async def page(request: Request) -> Response:
        expires = request.query_params["expires"]
        return PlainTextResponse("page", headers={**dates, "expires": expires})

    app = CacheMiddleware(
        Starlette(routes=[Route("/", page)]),
        cache=rk.cache(name="http", beta=0),
        rules=[CacheRule("/", ttl=60)],
    )
    async with browsing(app, "off") as http:
        for expires in ("0", "Tue, 01 Dec 2026 09:59:00 GMT", "not a date"):
            await http.get("/", params={"expires": expires})
            assert (await http.get("/", params={"expires": expires})).headers["x-cache"] == "MISS"
        assert await stored_windows(rk) == []
        await http.get("/", params={"expires": "Tue, 01 Dec 2026 10:00:07 GMT"})
    [(fresh, _swr, _pttl)] = await stored_windows(rk)
    assert fresh == 7000


# -- issue 14: say why, and let a page be shared --------------------------------------------


async def test_a_signed_in_request_says_why_it_bypassed_the_cache(
    rk: redkit.Redkit, store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    _site, app = build(rk, store)
    async with browsing(app) as http:
        await http.post("/login/erin")
        with caplog.at_level(logging.DEBUG, logger="redkit.cache"):
            response = await http.get("/page")
    assert response.headers["x-cache"] == "BYPASS"
    assert "credentials" in caplog.text
    assert "shared" in caplog.text


async def test_a_shared_page_serves_signed_in_users_from_the_anonymous_entry(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    rules = [CacheRule("/news", ttl=60, shared=True), CacheRule("/page", ttl=60, shared=True)]
    site, app = build(rk, store, rules=rules)
    async with browsing(app) as http:
        anonymous = await http.get("/news")
        assert anonymous.headers["x-cache"] == "MISS"
        await http.post("/login/frank")
        signed_in = await http.get("/news")
        assert signed_in.headers["x-cache"] == "HIT"
        assert signed_in.text == anonymous.text == "news #1"
        # What a signed-in user was sent is never stored for the others.
        assert (await http.get("/page")).text == "hello frank"
        http.cookies.clear()
        assert (await http.get("/page")).text == "hello anonymous"
    assert site.calls["news"] == 1


async def test_a_shared_rule_never_serves_a_private_response(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    site, app = build(rk, store, rules=[CacheRule("/private-news", ttl=60, shared=True)])
    async with browsing(app) as http:
        assert (await http.get("/private-news")).text == "news for you #1"
        await http.post("/login/gina")
        signed_in = await http.get("/private-news")
        assert signed_in.text == "news for you #2"
        assert signed_in.headers["x-cache"] == "MISS"
    assert site.calls["private-news"] == 2


def test_a_rule_is_per_user_or_shared_not_both() -> None:
    with pytest.raises(redkit.InvalidInput, match="shared"):
        CacheRule("/x", per_user=True, shared=True)


def test_credential_names_are_checked(rk: redkit.Redkit) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("unreachable")

    cache = rk.cache(name="http")
    for options in (
        {"credential_headers": "x-api-key"},
        {"credential_headers": ["x api key"]},
        {"credential_cookies": [""]},
        {"credential_cookies": [42]},
    ):
        with pytest.raises(redkit.InvalidInput):
            CacheMiddleware(app, cache=cache, rules=RULES, **options)
    middleware = CacheMiddleware(app, cache=cache, rules=RULES, credential_headers=["X-Api-Key"])
    assert middleware.credential_headers == ("x-api-key",)


# -- session_tags: a write about a user reaches that user's entries in every session --------


def _user_tags(session: redkit.Session) -> list[str]:
    return [f"user:{session.user_id}"]


@pytest.mark.cluster
@pytest.mark.parametrize("order", ORDERS)
async def test_session_tags_invalidate_one_users_pages_in_every_session_and_no_one_elses(
    rk: redkit.Redkit, store: SessionStore, order: Order
) -> None:
    rules = [CacheRule("/me", ttl=60, per_user=True, session_tags=_user_tags)]
    site, app = build(rk, store, order, rules=rules)
    tokens = [(await store.create(user)).id for user in ("ivy", "ivy", "jon")]
    async with browsing(app) as http:

        async def labels() -> list[str]:
            answers = [
                await http.get("/me", headers={"authorization": f"Bearer {t}"}) for t in tokens
            ]
            return [a.headers["x-cache"] for a in answers]

        assert await labels() == ["MISS", "MISS", "MISS"]
        assert await labels() == ["HIT", "HIT", "HIT"]
        cache = rk.cache(name="http")
        assert await cache.invalidate("user:ivy") == 2  # both of ivy's sessions
        assert await labels() == ["MISS", "MISS", "HIT"]
    assert site.calls["me"] == 5


async def test_session_tags_come_beside_the_paths_own_tags(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    rules = [CacheRule("/me", ttl=60, tags=["me"], per_user=True, session_tags=_user_tags)]
    _site, app = build(rk, store, rules=rules)
    token = (await store.create("kim")).id
    async with browsing(app) as http:
        auth = {"authorization": f"Bearer {token}"}
        assert (await http.get("/me", headers=auth)).headers["x-cache"] == "MISS"
        assert await rk.cache(name="http").invalidate("me") == 1
        assert (await http.get("/me", headers=auth)).headers["x-cache"] == "MISS"
        assert await rk.cache(name="http").invalidate("user:kim") == 1


async def test_a_session_tagged_rule_bypasses_credentials_that_are_not_a_session(
    rk: redkit.Redkit, store: SessionStore
) -> None:
    rules = [CacheRule("/key", ttl=60, per_user=True, session_tags=_user_tags)]
    site, app = build(rk, store, rules=rules, credential_headers=["x-api-key"])
    async with browsing(app) as http:
        for _ in range(2):
            keyed = await http.get("/key", headers={"x-api-key": "k1"})
            assert keyed.headers["x-cache"] == "BYPASS"  # its entry could carry no user tag
        assert (await http.get("/key")).headers["x-cache"] == "MISS"  # anonymous: path tags
    assert site.calls["key"] == 3


def test_session_tags_need_a_per_user_rule() -> None:
    with pytest.raises(redkit.InvalidInput, match="per_user"):
        CacheRule("/x", session_tags=_user_tags)
    with pytest.raises(redkit.InvalidInput, match="callable"):
        CacheRule("/x", per_user=True, session_tags=["user"])  # type: ignore[arg-type]
