"""The HTTP face: middleware, tiers, headers, 429 bodies, proxies, FastAPI, a real server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import redkit
from ratelimit.helpers import hello, identify
from redkit.embedded import ValkeyProcess
from redkit.ratelimit.fastapi import rate_limit
from redkit.ratelimit.middleware import RateLimitMiddleware
from redkit.ratelimit.policy import (
    DEFAULT_TIERS,
    Admission,
    Identity,
    TierPolicy,
    client_ip,
)
from uvicorn_server import serve_in_loop

SMALL_TIERS = {"anonymous": [(3, 60)], "user": [(5, 60)], "premium": [(2, 1), (50, 3600)]}


def make_app(policy: Any, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(RateLimitMiddleware, policy=policy, **options)
    return app


def client_for(app: Any, peer: str = "203.0.113.5") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 4711))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_anonymous_callers_get_429_with_the_real_wait_and_json(rk: redkit.Redkit) -> None:
    app = make_app(TierPolicy(rk, identify, tiers=SMALL_TIERS))
    async with client_for(app) as client:
        for remaining in (2, 1, 0):
            ok = await client.get("/")
            assert ok.status_code == 200
            assert ok.headers["ratelimit-policy"] == '"anonymous";q=3;w=60'
            assert re.fullmatch(rf'"anonymous";r={remaining};t=\d+', ok.headers["ratelimit"])
        limited = await client.get("/")
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/json"
    body = limited.json()
    assert body["error"] == "rate_limited"
    # Sliding window: the full window's count still weighs into the next one, so the real
    # wait can pass the window's end (never 2 windows).
    assert 0 < body["retry_after"] < 120
    assert int(limited.headers["retry-after"]) >= 1
    assert "Retry in" in body["message"]


async def test_each_tier_gets_its_own_limit_and_key(rk: redkit.Redkit) -> None:
    app = make_app(TierPolicy(rk, identify, tiers=SMALL_TIERS))
    async with client_for(app) as client:
        user = await client.get("/", headers={"X-User": "user:42"})
        assert user.headers["ratelimit-policy"] == '"user";q=5;w=60'
        # Two limits for premium: both advertised, 2 per second binds first.
        statuses = [
            (await client.get("/", headers={"X-User": "premium:7"})).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        other_user = await client.get("/", headers={"X-User": "user:43"})
        assert other_user.headers["ratelimit"].startswith('"user";r=4')


async def test_premium_headers_list_every_policy(rk: redkit.Redkit) -> None:
    app = make_app(TierPolicy(rk, identify, tiers=SMALL_TIERS))
    async with client_for(app) as client:
        response = await client.get("/", headers={"X-User": "premium:1"})
    assert response.headers["ratelimit-policy"] == (
        '"premium:2/1s";q=2;w=1, "premium:50/3600s";q=50;w=3600'
    )
    assert re.fullmatch(
        r'"premium:2/1s";r=1;t=\d+, "premium:50/3600s";r=49;t=\d+', response.headers["ratelimit"]
    )


async def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(rk: redkit.Redkit) -> None:
    untrusting = make_app(TierPolicy(rk, identify, tiers=SMALL_TIERS))
    async with client_for(untrusting, peer="10.0.0.9") as client:
        statuses = [
            (await client.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 200, 429]  # spoofed headers did not buy new buckets

    trusting = make_app(TierPolicy(rk, identify, tiers=SMALL_TIERS, trusted_proxies=["10.0.0.0/8"]))
    async with client_for(trusting, peer="10.0.0.9") as client:
        statuses = [
            (await client.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 200, 200]  # each real client has its own bucket


def test_client_ip_walks_forwarded_for_from_the_right() -> None:
    from redkit.ratelimit.policy import TrustedProxies

    trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
    scope = {
        "client": ("10.1.1.1", 1),
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7, 192.0.2.1")],
    }
    assert client_ip(scope, trusted) == "198.51.100.7"
    assert client_ip(scope) == "10.1.1.1"
    assert client_ip({"client": ("203.0.113.1", 1), "headers": scope["headers"]}, trusted) == (
        "203.0.113.1"
    )
    with pytest.raises(redkit.InvalidInput):
        TrustedProxies(["not-an-ip"])


async def test_legacy_headers_on_request(rk: redkit.Redkit) -> None:
    app = make_app(TierPolicy(rk, identify, tiers=SMALL_TIERS), legacy_headers=True)
    async with client_for(app) as client:
        await client.get("/")
        response = await client.get("/")
    assert response.headers["x-ratelimit-limit"] == "3"
    assert response.headers["x-ratelimit-remaining"] == "1"
    assert response.headers["x-ratelimit-used"] == "2"
    assert 0 < int(response.headers["x-ratelimit-reset"]) <= 120  # sliding: up to 2 windows


async def test_a_policy_may_exempt_requests_and_charge_a_cost(rk: redkit.Redkit) -> None:
    limiter = rk.rate_limiter(10, 60, "sliding_log")

    def policy(scope: Mapping[str, Any]) -> Admission | None:
        if scope["path"] == "/health":
            return None
        return Admission("all", limiter, cost=4 if scope["method"] == "POST" else 1)

    app = Starlette(routes=[Route("/{p:path}", hello, methods=["GET", "POST"])])
    app.add_middleware(RateLimitMiddleware, policy=policy)
    async with client_for(app) as client:
        health = await client.get("/health")
        assert "ratelimit" not in health.headers
        await client.post("/x")
        await client.post("/x")
        response = await client.get("/x")
    assert response.headers["ratelimit"].startswith('"sliding_log:10/60s";r=1;')


@pytest.mark.parametrize(("fail", "status"), [("open", 200), ("closed", 429)])
async def test_redis_down_is_never_a_500(own_server: ValkeyProcess, fail: str, status: int) -> None:
    async with redkit.connect(own_server.url, "rlhttp") as rk:
        app = make_app(TierPolicy(rk, identify, tiers=SMALL_TIERS, fail=fail, timeout=0.2))
        own_server.kill()
        async with client_for(app) as client:
            response = await client.get("/")
    assert response.status_code == status


async def test_fastapi_dependency_limits_one_route(rk: redkit.Redkit) -> None:
    search_limit = rk.rate_limiter(2, 60, "fixed_window")
    app = FastAPI()

    @app.get("/search", dependencies=[Depends(rate_limit(search_limit, legacy=True))])
    async def search() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"ok": "yes"}

    async with client_for(app) as client:
        first = await client.get("/search")
        assert first.status_code == 200
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert first.headers["ratelimit-policy"] == '"fixed_window:2/60s";q=2;w=60'
        await client.get("/search")
        limited = await client.get("/search")
        assert limited.status_code == 429
        assert limited.json()["detail"]["error"] == "rate_limited"
        assert "retry-after" in limited.headers
        assert (await client.get("/free")).status_code == 200


@pytest.fixture
async def live_server(rk: redkit.Redkit) -> AsyncIterator[str]:
    """The middleware in a real uvicorn server on a free port."""

    async def who(request: Request) -> JSONResponse:
        return JSONResponse({"decision": request.scope["state"]["rate_limit"].remaining})

    app = Starlette(routes=[Route("/", who)])
    app.add_middleware(RateLimitMiddleware, policy=TierPolicy(rk, identify, tiers=SMALL_TIERS))
    async with serve_in_loop(app, lifespan="off") as url:
        yield url


async def test_a_real_server_limits_real_connections(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server) as client:
        responses = [await client.get("/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.json().get("decision") for r in responses[:3]] == [2, 1, 0]
    assert responses[3].json()["retry_after"] > 0


def test_the_default_tier_table_is_the_briefs() -> None:
    assert {tier: pairs[0][0] for tier, pairs in DEFAULT_TIERS.items()} == {
        "anonymous": 10,
        "user": 100,
        "premium": 1000,
        "admin": 10000,
    }


async def test_an_unknown_tier_is_a_clear_error(rk: redkit.Redkit) -> None:
    policy = TierPolicy(rk, lambda scope: Identity("gold", "1"), tiers=SMALL_TIERS)
    with pytest.raises(redkit.InvalidInput, match="unknown tier 'gold'"):
        await policy({"type": "http", "headers": [], "client": ("1.2.3.4", 1)})


async def test_the_fastapi_429_has_the_middlewares_flat_body(rk: redkit.Redkit) -> None:
    from redkit.ratelimit.fastapi import RateLimitExceeded, rate_limit_exception_handler

    limiter = rk.rate_limiter(1, 60, "fixed_window")
    app = FastAPI()
    app.add_exception_handler(RateLimitExceeded, rate_limit_exception_handler)

    @app.get("/", dependencies=[Depends(rate_limit(limiter))])
    async def index() -> dict[str, str]:
        return {"ok": "yes"}

    middleware_app = make_app(TierPolicy(rk, identify, tiers={"anonymous": [(1, 60)]}))
    async with client_for(app) as client, client_for(middleware_app, "192.0.2.9") as other:
        await client.get("/")
        limited = await client.get("/")
        await other.get("/")
        reference = await other.get("/")
    assert limited.status_code == reference.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert set(limited.json()) == set(reference.json())
    assert int(limited.headers["retry-after"]) >= 1


async def test_middleware_and_dependency_send_one_coherent_set_of_headers(
    rk: redkit.Redkit,
) -> None:
    route_limit = rk.rate_limiter(2, 60, "fixed_window", name="search")
    app = FastAPI()

    @app.get("/search", dependencies=[Depends(rate_limit(route_limit, legacy=True))])
    async def search() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(
        RateLimitMiddleware,
        policy=TierPolicy(rk, identify, tiers={"anonymous": [(10, 60)]}),
        legacy_headers=True,
    )
    async with client_for(app) as client:
        responses = [await client.get("/search") for _ in range(3)]
    for response in responses:
        assert len(response.headers.get_list("ratelimit-policy")) == 1
        assert len(response.headers.get_list("ratelimit")) == 1
        assert len(response.headers.get_list("x-ratelimit-remaining")) == 1
        # The route's 2/min binds before the middleware's 10/min: its numbers are shown.
        assert response.headers["ratelimit-policy"] == '"search";q=2;w=60'
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["1", "0", "0"]
    assert responses[2].headers["retry-after"] == responses[2].headers["x-ratelimit-reset"]
