"""Start-up and shutdown: configuration errors stop the app with redkit's message, the app's
own lifespan runs inside the connection, and requests outside a running app say what to do."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

import redkit
from redkit.cache.middleware import CacheRule
from redkit.embedded import find_free_port
from redkit.web import (
    CacheConfig,
    RateLimitConfig,
    RedkitDep,
    RedkitWeb,
    SessionConfig,
)
from web.helpers import failed_start

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette 1.x prefers httpx2 for its TestClient
    from starlette.testclient import TestClient


# -- configuration errors, under a real uvicorn ----------------------------------------------


async def test_a_short_signing_key_stops_uvicorn_with_redkits_message(
    redis_url: str, tmp_path: Path
) -> None:
    # It used to start: "ASGI 'lifespan' protocol appears unsupported", then a 500 for every
    # request, because the middleware's constructor raised while Starlette built its stack.
    env = {"REDIS_URL": redis_url, "MISCONFIGURED": "short_key"}
    code, output = await failed_start("web.misconfigured:app", env, tmp_path)
    assert code != 0
    assert "ConfigurationError: signing_key must be at least 32 bytes, got 9" in output
    assert "appears unsupported" not in output


async def test_an_unreachable_server_stops_uvicorn_at_start_up(tmp_path: Path) -> None:
    env = {"REDIS_URL": f"redis://127.0.0.1:{find_free_port()}", "MISCONFIGURED": "no"}
    code, output = await failed_start("web.misconfigured:app", env, tmp_path)
    assert code != 0
    assert "redkit could not connect, so the app does not start: connect:" in output
    assert "Application startup failed" in output


async def test_an_option_only_the_server_side_checks_stops_uvicorn_at_start_up(
    rk: redkit.Redkit, redis_url: str, tmp_path: Path
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "REDKIT_NAMESPACE": rk.namespace,
        "MISCONFIGURED": "bad_cache_name",
    }
    code, output = await failed_start("web.misconfigured:app", env, tmp_path)
    assert code != 0
    assert "redkit could not start the app: cache name 'no spaces allowed'" in output
    assert "Application startup failed" in output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SessionConfig(signing_key=b"x" * 31), "at least 32 bytes, got 31"),
        (lambda: SessionConfig(same_site="none", secure=False), "without Secure"),
        (lambda: SessionConfig(cookie_name="a b"), "cookie_name"),
        (lambda: SessionConfig(idle_ttl=3600, absolute_ttl=60), "longer than absolute_ttl"),
        (lambda: SessionConfig(idle_ttl=-1), "idle_ttl"),
        (lambda: SessionConfig(cookies=False, bearer=False), "cookies, bearer"),
        (lambda: RateLimitConfig(tiers={"user": [(10, 60)]}), "no 'anonymous' tier"),
        (lambda: RateLimitConfig(tiers={"anonymous": [(10, 60)]}), "no 'user' tier"),
        (lambda: RateLimitConfig(tiers={"anonymous": [(0, 60)], "user": [(1, 1)]}), "limit"),
        (lambda: RateLimitConfig(tiers={"anonymous": [10], "user": [(1, 1)]}), "pair"),  # type: ignore[list-item]
        (lambda: RateLimitConfig(algorithm="leaky"), "unknown algorithm 'leaky'"),
        (lambda: RateLimitConfig(trusted_proxies=["not-an-ip"]), "trusted proxy"),
        (lambda: RateLimitConfig(exempt="/health"), "exempt"),
        (lambda: CacheConfig(rules=["/products"]), "CacheRule"),  # type: ignore[list-item]
        (lambda: CacheConfig(default_ttl=0), "default_ttl"),
        (lambda: RedkitWeb(namespace="a b"), "namespace"),
        (lambda: RedkitWeb(connect_timeout=-1), "connect_timeout"),
        (lambda: RedkitWeb(sessions="yes"), "SessionConfig"),  # type: ignore[arg-type]
        (lambda: RedkitWeb().worker("q", {}), "functions"),
        (lambda: RedkitWeb().rate_limit(0, 60), "limit must be"),
        (lambda: RedkitWeb().rate_limit(5, -1), "window"),
        (lambda: RedkitWeb().rate_limit(5, 60, trusted_proxies=["nope"]), "trusted proxy"),
    ],
)
def test_configuration_errors_are_raised_where_the_app_is_written(
    make: Callable[[], Any], message: str
) -> None:
    with pytest.raises(redkit.ConfigurationError, match=message):
        make()


def test_an_app_gets_one_redkit_web() -> None:
    app = FastAPI()
    RedkitWeb(app)
    with pytest.raises(redkit.ConfigurationError, match="already has a RedkitWeb"):
        RedkitWeb(app)


# -- the lifespan ----------------------------------------------------------------------------


def test_the_apps_own_lifespan_runs_inside_the_connection(rk_env: Mapping[str, str]) -> None:
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        rk: redkit.Redkit = app.state.redkit  # connected before the app's own start-up
        await rk.redis.set(rk.keys.key("started"), "yes")
        seen.append(f"startup {rk.namespace}")
        yield {"greeting": "hello"}  # the app's lifespan state still reaches requests
        seen.append(f"shutdown {await rk.redis.get(rk.keys.key('started'))!r}")

    app = FastAPI(lifespan=lifespan)
    web = RedkitWeb(app, cache=[CacheRule("/state", ttl=60)])

    @app.get("/state")
    async def state(request: Request, rk: RedkitDep) -> dict[str, Any]:
        return {"greeting": request.state.greeting, "same": rk is request.app.state.redkit}

    with TestClient(app) as client:
        assert client.get("/state").json() == {"greeting": "hello", "same": True}
        assert web.rk.namespace == rk_env["REDKIT_NAMESPACE"]
    # The app's shutdown ran while redkit was still connected; then redkit closed.
    assert seen == [f"startup {rk_env['REDKIT_NAMESPACE']}", "shutdown b'yes'"]
    assert not hasattr(app.state, "redkit")
    with pytest.raises(redkit.ConfigurationError, match="lifespan has not run"):
        web.rk  # noqa: B018


def test_requests_without_the_lifespan_say_what_to_do(rk_env: Mapping[str, str]) -> None:
    app = FastAPI()
    RedkitWeb(app)

    @app.get("/")
    async def root() -> str:
        return "unreachable"

    client = TestClient(app)  # not entered: no lifespan, no connection
    with pytest.raises(redkit.ConfigurationError, match=r"with TestClient\(app\) as client"):
        client.get("/")


def test_a_request_from_another_event_loop_is_refused(rk_env: Mapping[str, str]) -> None:
    app = FastAPI()
    RedkitWeb(app)

    @app.get("/")
    async def root() -> str:
        return "ok"

    with TestClient(app) as client:
        assert client.get("/").json() == "ok"
        stray = TestClient(app)  # each of its requests runs in a loop of its own
        with pytest.raises(redkit.ConfigurationError, match="another event loop"):
            stray.get("/")


async def test_one_app_runs_one_lifespan_at_a_time(rk_env: Mapping[str, str]) -> None:
    web = RedkitWeb()
    async with web.running() as rk:
        assert await rk.ping() > 0
        with pytest.raises(redkit.ConfigurationError, match="already running"):
            async with web.running():
                pass
    async with web.running() as again:  # and again once stopped
        assert again is not rk
        assert rk.closed


async def test_a_worker_that_cannot_be_built_fails_the_start_up(rk_env: Mapping[str, str]) -> None:
    async def job(payload: Any) -> None: ...

    web = RedkitWeb()
    web.worker("q", {"job": job}, lease=-1)  # checked by the worker, when the app starts
    with pytest.raises(redkit.InvalidInput, match="lease"):
        async with web.running():
            raise AssertionError("unreachable")
    assert not web.started
