"""What an adversary tried against RedkitWeb's HTTP surface, kept as tests: the findings
(each failed before its fix) and the attacks that held."""

from __future__ import annotations

import warnings

import httpx
from fastapi import FastAPI

import redkit
from redkit.cache.middleware import CacheRule
from redkit.web import CacheConfig, LoggedInDep, RedkitWeb, SessionDep

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette 1.x prefers httpx2 for its TestClient
    from starlette.testclient import TestClient


def service(rk: redkit.Redkit, redis_url: str) -> tuple[FastAPI, RedkitWeb]:
    app = FastAPI()
    web = RedkitWeb(
        app,
        url=redis_url,
        namespace=rk.namespace,
        cache=CacheConfig(rules=[CacheRule("/mine", ttl=60, per_user=True)]),
    )

    @app.post("/login")
    async def login(name: str, session: SessionDep) -> dict[str, str | None]:
        await session.login(name)
        return {"token": session.token}

    @app.get("/me")
    async def me(session: LoggedInDep) -> dict[str, str]:
        return {"user": session.user_id}

    @app.get("/mine")
    async def mine(session: LoggedInDep) -> dict[str, str]:
        return {"user": session.user_id}

    return app, web


async def test_a_session_cookie_on_a_second_cookie_line_is_the_users_session(
    rk: redkit.Redkit, redis_url: str
) -> None:
    # HTTP/2 clients send each cookie on a Cookie line of its own; the session layer read
    # only the first line, so such a user looked signed out (while the cache, which reads
    # every line, saw credentials): the layers disagreed on who was calling.
    app, web = service(rk, redis_url)
    async with web.running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            token = (await http.post("/login", params={"name": "ada"})).json()["token"]
            http.cookies.clear()
            split = [("cookie", "theme=dark"), ("cookie", f"session={token}")]
            assert (await http.get("/me", headers=split)).json() == {"user": "ada"}
            first = await http.get("/mine", headers=split)
            again = await http.get("/mine", headers=[("cookie", f"session={token}")])
            assert first.json() == again.json() == {"user": "ada"}
            assert again.headers["x-cache"] == "HIT"  # one user, one entry, however sent


async def test_notification_routes_take_pattern_grants_and_allowed_origins(
    rk: redkit.Redkit, redis_url: str
) -> None:
    # Without them, RedkitWeb's routes could grant no pattern and pin no origin: an app had to
    # leave the integration to subscribe to `project:p1:*` or to serve a page on another host.
    app = FastAPI()
    web = RedkitWeb(app, url=redis_url, namespace=rk.namespace)
    app.router.routes.extend(
        web.notification_routes(
            authorize=lambda conn, names: [],
            authorize_patterns=lambda conn, patterns: [
                p for p in patterns if p.startswith("project:p1:")
            ],
            allowed_origins=["https://app.example"],
        )
    )
    with TestClient(app) as client:
        with client.stream("GET", "/events", params={"pattern": "project:p1:*"}) as stream:
            assert stream.status_code == 200
        assert client.get("/events", params={"pattern": "project:*"}).status_code == 403
        with client.websocket_connect(
            "/ws?pattern=project:p1:*", headers={"origin": "https://app.example"}
        ):
            pass
