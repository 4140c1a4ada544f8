"""RedkitWeb's middleware and dependencies in one process: tiers follow the session, the
rate limit runs before the cache, signed-in users never get a shared page, the user loader,
route limits, cached values, and the session found whatever the middleware order."""

from __future__ import annotations

import re
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

import redkit
from redkit.cache.middleware import CacheRule
from redkit.ratelimit.middleware import RateLimitMiddleware
from redkit.ratelimit.policy import TierPolicy
from redkit.sessions.middleware import SessionMiddleware, resolve_session
from redkit.web import (
    CacheConfig,
    CacheDep,
    LoggedInDep,
    RateLimitConfig,
    RedkitDep,
    RedkitWeb,
    SessionConfig,
    SessionDep,
    current_user,
    require_user,
    session_identity,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette 1.x prefers httpx2 for its TestClient
    from starlette.testclient import TestClient

User = Annotated[dict[str, str], Depends(require_user)]
MaybeUser = Annotated[dict[str, str] | None, Depends(current_user)]
TIERS = {"anonymous": [(2, 60)], "user": [(3, 60)], "premium": [(5, 60)]}


def build(rk: redkit.Redkit, redis_url: str, **options: Any) -> tuple[FastAPI, RedkitWeb]:
    app = FastAPI()
    web = RedkitWeb(app, url=redis_url, namespace=rk.namespace, **options)

    @app.post("/login")
    async def login(name: str, session: SessionDep, tier: str | None = None) -> dict[str, Any]:
        await session.login(name, {"tier": tier} if tier else None)
        return {"token": session.token}

    @app.get("/whoami")
    async def whoami(session: SessionDep) -> dict[str, Any]:
        return {"user": session.user_id}

    return app, web


class Clients:
    """In-process clients of one app, each with its own cookies and client address."""

    def __init__(self, app: FastAPI, stack: AsyncExitStack) -> None:
        self.app = app
        self.stack = stack

    async def __call__(self, peer: str = "203.0.113.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 4711))
        client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
        return await self.stack.enter_async_context(client)


@asynccontextmanager
async def serving(web: RedkitWeb, app: FastAPI) -> AsyncIterator[Clients]:
    """The app's redkit part started (as its lifespan would) and a maker of clients."""
    async with web.running(app), AsyncExitStack() as stack:
        yield Clients(app, stack)


async def sign_in(client: httpx.AsyncClient, name: str, tier: str | None = None) -> str:
    params = {"name": name, **({"tier": tier} if tier else {})}
    response = await client.post("/login", params=params)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def remaining(response: httpx.Response) -> int:
    found = re.search(r";r=(\d+)", response.headers["ratelimit"])
    assert found, response.headers
    return int(found[1])


async def test_tiers_follow_the_session_users_by_id_and_anonymous_callers_by_ip(
    rk: redkit.Redkit, redis_url: str
) -> None:
    app, web = build(rk, redis_url, rate_limits=RateLimitConfig(tiers=TIERS))
    async with serving(web, app) as clients:
        anonymous = await clients()
        first = await anonymous.get("/whoami")
        assert first.headers["ratelimit-policy"] == '"anonymous";q=2;w=60'
        assert (await anonymous.get("/whoami")).status_code == 200
        assert (await anonymous.get("/whoami")).status_code == 429
        # Signed in: a bucket of the user's own, in the user tier (signed in from another
        # address: this one's anonymous requests are used up, and signing in is one).
        ada = await clients("192.0.2.1")
        await sign_in(ada, "ada")
        ada_on_the_first_ip = await clients()
        ada_on_the_first_ip.cookies = ada.cookies
        statuses = [(await ada_on_the_first_ip.get("/whoami")).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        bo = await clients("192.0.2.2")
        await sign_in(bo, "bo", tier="premium")  # the tier is in the session's data
        response = await bo.get("/whoami")
        assert response.headers["ratelimit-policy"] == '"premium";q=5;w=60'
        assert remaining(response) == 4


async def test_a_cached_page_carries_this_requests_rate_limit_headers(
    rk: redkit.Redkit, redis_url: str
) -> None:
    app, web = build(
        rk,
        redis_url,
        rate_limits=RateLimitConfig(tiers={"anonymous": [(5, 60)], "user": [(5, 60)]}),
        cache=[CacheRule("/page", ttl=60)],
    )
    calls = []

    @app.get("/page")
    async def page() -> str:
        calls.append(1)
        return "the page"

    async with serving(web, app) as clients:
        client = await clients()
        responses = [await client.get("/page") for _ in range(3)]
    assert [r.headers["x-cache"] for r in responses] == ["MISS", "HIT", "HIT"]
    assert [remaining(r) for r in responses] == [4, 3, 2]
    assert len(calls) == 1


async def test_a_rejected_request_never_reaches_the_cache_or_the_endpoint(
    rk: redkit.Redkit, redis_url: str
) -> None:
    app, web = build(
        rk,
        redis_url,
        rate_limits=RateLimitConfig(tiers={"anonymous": [(1, 60)], "user": [(1, 60)]}),
        cache=[CacheRule("/page", ttl=60)],
    )
    calls = []

    @app.get("/page")
    async def page() -> str:
        calls.append(1)
        return "the page"

    async with serving(web, app) as clients:
        client = await clients()
        assert (await client.get("/page")).status_code == 200
        limited = await client.get("/page", headers={"cache-control": "no-cache"})
    assert limited.status_code == 429
    assert "x-cache" not in limited.headers
    assert len(calls) == 1


@pytest.mark.parametrize("cookie_name", ["session", "sid"])
async def test_signed_in_users_never_get_the_anonymous_page(
    rk: redkit.Redkit, redis_url: str, cookie_name: str
) -> None:
    app, web = build(
        rk,
        redis_url,
        sessions=SessionConfig(cookie_name=cookie_name),
        cache=[CacheRule("/hello", ttl=60)],
    )

    @app.get("/hello")
    async def hello(session: SessionDep) -> str:
        return f"hello {session.user_id or 'stranger'}"

    async with serving(web, app) as clients:
        stranger, ada = await clients(), await clients()
        assert (await stranger.get("/hello")).json() == "hello stranger"
        assert (await stranger.get("/hello")).headers["x-cache"] == "HIT"
        await sign_in(ada, "ada")
        assert cookie_name in ada.cookies
        mine = await ada.get("/hello")
        assert mine.json() == "hello ada"
        assert mine.headers.get("x-cache") != "HIT"


async def test_the_user_loader_runs_once_per_request(rk: redkit.Redkit, redis_url: str) -> None:
    loads: list[str] = []

    async def load(session: redkit.Session) -> dict[str, str] | None:
        loads.append(session.user_id)
        return {"name": session.user_id.title()} if session.user_id != "ghost" else None

    app, web = build(rk, redis_url, user_loader=load)

    @app.get("/profile")
    async def profile(user: User, again: MaybeUser) -> dict[str, str]:
        assert again is user
        return user

    async with serving(web, app) as clients:
        client = await clients()
        assert (await client.get("/profile")).status_code == 401
        await sign_in(client, "ada")
        assert (await client.get("/profile")).json() == {"name": "Ada"}
        assert loads == ["ada"]
        await sign_in(client, "ghost")  # a session whose user is gone
        assert (await client.get("/profile")).status_code == 401


async def test_route_limits_key_on_the_user_when_signed_in_and_on_the_ip_otherwise(
    rk: redkit.Redkit, redis_url: str
) -> None:
    app, web = build(rk, redis_url)
    router = APIRouter()  # the dependencies work from routers of other modules too

    @router.get("/search", dependencies=[Depends(web.rate_limit(2, 60, name="search"))])
    async def search(rk: RedkitDep) -> str:
        return rk.namespace

    app.include_router(router)
    async with serving(web, app) as clients:
        first, same_ip, ada = [await clients("198.51.100.1") for _ in range(3)]
        assert (await first.get("/search")).json() == rk.namespace
        assert (await same_ip.get("/search")).status_code == 200
        assert (await same_ip.get("/search")).status_code == 429
        await sign_in(ada, "ada")
        assert [(await ada.get("/search")).status_code for _ in range(3)] == [200, 200, 429]
    decision = await rk.rate_limiter(2, 60, name="search").peek("user:ada")
    assert decision.remaining == 0


async def test_exempt_paths_are_never_limited(rk: redkit.Redkit, redis_url: str) -> None:
    cfg = RateLimitConfig(tiers={"anonymous": [(1, 60)], "user": [(1, 60)]}, exempt=["/health"])
    app, web = build(rk, redis_url, rate_limits=cfg)

    @app.get("/healthz")
    async def health() -> str:
        return "ok"

    async with serving(web, app) as clients:
        client = await clients()
        responses = [await client.get("/healthz") for _ in range(3)]
    assert [r.status_code for r in responses] == [200] * 3
    assert "ratelimit" not in responses[0].headers


async def test_cached_values_and_pages_of_a_tag_are_invalidated_together(
    rk: redkit.Redkit, redis_url: str
) -> None:
    app, web = build(rk, redis_url, cache=CacheConfig(rules=[CacheRule("/menu", tags=["menu"])]))
    computed: list[str] = []

    @web.cached(ttl=60, tags=["menu"])  # declared at import, bound when the app starts
    async def price(item: str) -> int:
        computed.append(item)
        return len(item)

    @app.get("/menu")
    async def menu() -> dict[str, int]:
        return {"tea": await price("tea")}

    @app.post("/menu")
    async def change(cache: CacheDep) -> int:
        return await cache.invalidate("menu")

    async with serving(web, app) as clients:
        client = await clients()
        assert (await client.get("/menu")).headers["x-cache"] == "MISS"
        assert (await client.get("/menu")).headers["x-cache"] == "HIT"
        assert await price("tea") == 3
        assert computed == ["tea"]
        assert (await client.post("/menu")).json() == 2  # the page and the value
        assert (await client.get("/menu")).headers["x-cache"] == "MISS"
        assert computed == ["tea", "tea"]


async def test_login_required_answers_401_and_a_bearer_token_works(
    rk: redkit.Redkit, redis_url: str
) -> None:
    app, web = build(rk, redis_url)

    @app.get("/me")
    async def me(session: LoggedInDep) -> str:
        return session.user_id

    async with serving(web, app) as clients:
        client = await clients()
        refused = await client.get("/me")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        token = await sign_in(client, "ada")
        client.cookies.clear()
        with_token = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert with_token.json() == "ada"


# -- the session whatever the middleware order ------------------------------------------------


def wrong_order_app(rk: redkit.Redkit) -> FastAPI:
    """Session middleware added first, so the rate limiter runs *outside* it."""
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=rk.sessions())
    policy = TierPolicy(rk, session_identity(), tiers={"anonymous": [(1, 60)], "user": [(2, 60)]})
    app.add_middleware(RateLimitMiddleware, policy=policy)

    @app.get("/")
    async def root() -> str:
        return "ok"

    return app


async def test_limits_are_per_user_when_the_rate_limiter_runs_outside_the_sessions(
    rk: redkit.Redkit,
) -> None:
    app = wrong_order_app(rk)
    store = rk.sessions()
    tokens = [(await store.create(name, {})).id for name in ("ada", "bo")]
    transport = httpx.ASGITransport(app=app)  # no lifespan: found through the app's stack
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for token in tokens:
            auth = {"Authorization": f"Bearer {token}"}
            statuses = [(await client.get("/", headers=auth)).status_code for _ in range(3)]
            assert statuses == [200, 200, 429]  # the user tier, for each user
        assert [(await client.get("/")).status_code for _ in range(2)] == [200, 429]


class SeesTheSession:
    """An application's own middleware, outside RedkitWeb's: it reads the session too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handle = await resolve_session(scope)
            scope["outer_saw"] = handle.user_id if handle else "no session middleware"
        await self.app(scope, receive, send)


def test_a_layer_outside_redkit_web_finds_the_session(rk_env: Mapping[str, str]) -> None:
    app = FastAPI()
    RedkitWeb(app)
    app.add_middleware(SeesTheSession)  # added after: outside redkit's middleware

    @app.post("/login")
    async def do_login(session: SessionDep) -> None:
        await session.login("ada")

    @app.get("/")
    async def root(request: Request, session: SessionDep) -> dict[str, Any]:
        return {"outer": request.scope["outer_saw"], "inner": session.user_id}

    with TestClient(app) as client:
        assert client.get("/").json() == {"outer": None, "inner": None}
        client.post("/login")
        assert client.get("/").json() == {"outer": "ada", "inner": "ada"}
