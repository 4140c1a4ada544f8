"""resolve_session: a layer outside SessionMiddleware learns the request's session, whatever
the middleware order, with one store read per request (over uvicorn and TestClient)."""

from __future__ import annotations

import warnings
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import redkit
from redkit.sessions import SessionStore
from redkit.sessions.middleware import (
    SessionMiddleware,
    current_session,
    find_session_middleware,
    resolve_session,
)
from sessions.counting import CountingStore
from uvicorn_server import serve_in_loop

with warnings.catch_warnings():
    # Starlette 1.x nudges TestClient users from httpx to httpx2; httpx works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


class Outer:
    """A layer that must know the user before the session middleware runs (like a cache)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handle = await resolve_session(scope)
        seen = "no-middleware" if handle is None else (handle.user_id or "anonymous")

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-outer-user", seen.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, tagged)


async def login(request: Request) -> Response:
    session = await current_session(request).login(request.path_params["user"])
    return JSONResponse({"token": session.id})


async def whoami(request: Request) -> Response:
    return JSONResponse({"user": current_session(request).user_id})


async def logout(request: Request) -> Response:
    return JSONResponse({"ended": await current_session(request).logout()})


def make_app(store: SessionStore, *, outer: bool = True) -> Starlette:
    layers = [Middleware(Outer)] if outer else []
    layers.append(Middleware(SessionMiddleware, store=store, cookie_name="sid", secure=False))
    return Starlette(
        routes=[
            Route("/login/{user}", login, methods=["POST"]),
            Route("/whoami", whoami),
            Route("/logout", logout, methods=["POST"]),
        ],
        middleware=layers,
    )


@pytest.fixture
def store(rk: redkit.Redkit) -> CountingStore:
    return CountingStore(rk, idle_ttl=60, absolute_ttl=3600)


def serving(app: Any, lifespan: Literal["on", "off"] = "on") -> AbstractAsyncContextManager[str]:
    return serve_in_loop(app, lifespan=lifespan)


@pytest.mark.cluster
async def test_an_outer_layer_sees_the_session_over_uvicorn_with_one_store_read(
    store: CountingStore,
) -> None:
    async with serving(make_app(store)) as url, httpx.AsyncClient(base_url=url) as http:
        anonymous = await http.get("/whoami")
        assert anonymous.headers["x-outer-user"] == "anonymous"
        await http.post("/login/carol")
        assert "sid" in http.cookies
        before = store.reads
        me = await http.get("/whoami")
        assert me.headers["x-outer-user"] == "carol"
        assert me.json() == {"user": "carol"}
        assert store.reads - before == 1  # the session middleware reused the outer answer


async def test_the_cookie_of_a_dead_session_is_still_cleared_when_an_outer_layer_resolved_it(
    store: CountingStore,
) -> None:
    async with serving(make_app(store)) as url, httpx.AsyncClient(base_url=url) as http:
        token = (await http.post("/login/dave")).json()["token"]
        await store.revoke(token)
        response = await http.get("/whoami")
        assert response.headers["x-outer-user"] == "anonymous"
        assert response.headers["set-cookie"].startswith("sid=; Max-Age=0")
        assert "sid" not in http.cookies


class ConnectedInItsLifespan:
    """The app as a service builds it: TestClient runs it in an event loop of its own, so it
    connects in its lifespan and only then builds the middleware stack."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        self.app: Starlette | None = None
        self.store: CountingStore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with redkit.connect(self.redis_url, self.namespace) as rk:
                self.store = CountingStore(rk, idle_ttl=60, absolute_ttl=3600)
                self.app = make_app(self.store)
                await self.app(scope, receive, send)  # startup, then shutdown
                async for key in rk.redis.scan_iter(match=rk.keys.pattern):
                    await rk.redis.unlink(key)
            return
        assert self.app is not None
        await self.app(scope, receive, send)


def test_an_outer_layer_sees_the_session_under_the_test_client(
    redis_url: str, namespace: str
) -> None:
    app = ConnectedInItsLifespan(redis_url, namespace)
    with TestClient(app, base_url="http://localhost") as http:
        assert http.get("/whoami").headers["x-outer-user"] == "anonymous"
        http.post("/login/erin")
        assert app.store is not None
        before = app.store.reads
        response = http.get("/whoami")
        assert response.headers["x-outer-user"] == "erin"
        assert response.json() == {"user": "erin"}
        assert app.store.reads - before == 1


async def test_without_a_lifespan_the_middleware_is_found_through_the_app(
    store: CountingStore,
) -> None:
    found: list[SessionMiddleware | None] = []
    inner = make_app(store, outer=False)

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found.append(find_session_middleware(scope))
            found.append(find_session_middleware(scope, inner))
            found.append(find_session_middleware(scope))  # recorded for the layers inside
        await inner(scope, receive, send)

    async with serving(outer, lifespan="off") as url, httpx.AsyncClient(base_url=url) as http:
        await http.get("/whoami")  # the app's stack is built on the way (Starlette would too)
    assert found[0] is None
    assert isinstance(found[1], SessionMiddleware)
    assert found[2] is found[1]
    assert found[1].credential_cookies == ("sid",)
    assert found[1].credential_headers == ("authorization",)


async def test_resolve_session_is_none_without_a_session_middleware() -> None:
    scope: dict[str, Any] = {"type": "http", "headers": [(b"cookie", b"sid=x")], "state": {}}
    assert await resolve_session(scope) is None
    assert find_session_middleware(scope, object()) is None


def test_a_bearer_only_api_has_no_credential_cookie(store: CountingStore) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("unreachable")

    middleware = SessionMiddleware(app, store, cookies=False)
    assert middleware.credential_cookies == ()
    assert middleware.credential_headers == ("authorization",)
    assert SessionMiddleware(app, store, bearer=False).credential_headers == ()
