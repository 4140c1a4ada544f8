"""What an adversary tried against RedkitWeb's HTTP surface, kept as tests: the findings
(each failed before its fix) and the attacks that held."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

import redkit
from redkit.cache.middleware import CacheRule
from redkit.web import CacheConfig, LoggedInDep, RedkitWeb, SessionDep


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
