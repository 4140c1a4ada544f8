"""Redis down or hung under a running RedkitWeb app: a 503 JSON with Retry-After (or the
rate limiter's and the cache's fail-open answer) within the command timeout, never a 500,
a traceback or a hang; over real uvicorn, on a server the test starts, kills and pauses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

import redkit
from redkit.embedded import ValkeyProcess, find_free_port
from redkit.errors import ConnectionLost
from redkit.sessions.middleware import SessionMiddleware
from redkit.web import RedkitWeb, SessionDep
from servers import TEST_CONFIG
from web.helpers import Served, uvicorn_app

# A short command timeout keeps the hung-server cases quick; the client's timeout is only a
# hang detector (far above the bound), not a timing assertion.
COMMAND_TIMEOUT = "0.5"
HANG = 15.0


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ValkeyProcess]:
    """A server this test may kill, pause and restart on the same port."""
    server = ValkeyProcess(tmp_path / "valkey", port=find_free_port(), config=TEST_CONFIG)
    server.start()
    yield server
    server.resume()
    server.stop()


@asynccontextmanager
async def outage_app(server: ValkeyProcess, workdir: Path) -> AsyncIterator[Served]:
    env = {
        "REDIS_URL": server.url,
        "REDKIT_NAMESPACE": "outage",
        "REDKIT_COMMAND_TIMEOUT": COMMAND_TIMEOUT,
        "REDKIT_CONNECT_TIMEOUT": COMMAND_TIMEOUT,
    }
    async with uvicorn_app("web.outage:app", env, workdir) as served:
        yield served


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["error"] == "unavailable"
    assert "127.0.0.1" not in body["message"]  # the server's address stays in the log


async def probe_everything(served: Served, token: str) -> dict[str, Any]:
    """Every kind of request, each within the hang detector; what each answered."""
    bearer = {"authorization": f"Bearer {token}"}
    cookie = {"cookie": f"session={token}"}
    answers: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=served.url, timeout=HANG) as http:
        answers["login"] = await http.post("/login", params={"name": "ada"})
        answers["me bearer"] = await http.get("/me", headers=bearer)
        answers["me cookie"] = await http.get("/me", headers=cookie)
        answers["whoami"] = await http.get("/whoami", headers=bearer)
        answers["products anonymous"] = await http.get("/products")
        answers["products signed in"] = await http.get("/products", headers=bearer)
        answers["search"] = await http.get("/search", params={"q": "t"})
        answers["events"] = await http.get("/events", params={"channel": "orders"})
        answers["events signed in"] = await http.get(
            "/events", params={"channel": "orders"}, headers=bearer
        )
    ws_url = served.url.replace("http://", "ws://") + "/ws?channel=orders"
    for name, headers in (("ws", {}), ("ws signed in", bearer)):
        with pytest.raises(InvalidStatus) as refused:
            async with asyncio.timeout(HANG), ws_connect(ws_url, additional_headers=headers):
                pass
        answers[name] = refused.value.response
    return answers


def assert_degraded(answers: dict[str, Any], served: Served) -> None:
    for name, response in answers.items():
        assert response.status_code != 500, (name, served.output()[-3000:])
    for name in ("login", "me bearer", "me cookie", "whoami", "products signed in"):
        assert_unavailable(answers[name])
    for name in ("events", "events signed in"):
        assert_unavailable(answers[name])
    for name in ("ws", "ws signed in"):
        assert answers[name].status_code == 503
    # The rate limiter and the cache fail open by default: anonymous reads still work.
    assert answers["products anonymous"].status_code == 200
    assert answers["search"].status_code == 200
    assert "Traceback" not in served.output()


async def sign_in(served: Served) -> str:
    async with httpx.AsyncClient(base_url=served.url, timeout=HANG) as http:
        response = await http.post("/login", params={"name": "grace"})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        assert (await http.get("/me", headers={"authorization": f"Bearer {token}"})).json() == {
            "user": "grace"
        }
        return token


async def test_a_stopped_server_is_a_503_everywhere_and_the_app_recovers(
    own_server: ValkeyProcess, tmp_path: Path
) -> None:
    async with outage_app(own_server, tmp_path) as served:
        token = await sign_in(served)
        own_server.stop()
        assert_degraded(await probe_everything(served, token), served)
        own_server.start()
        await sign_in(served)


async def test_a_hung_server_is_a_503_within_the_timeout_never_a_hang(
    own_server: ValkeyProcess, tmp_path: Path
) -> None:
    async with outage_app(own_server, tmp_path) as served:
        token = await sign_in(served)
        own_server.pause()
        try:
            assert_degraded(await probe_everything(served, token), served)
        finally:
            own_server.resume()
        await sign_in(served)


# -- in one process: the session middleware on its own, and an app without sessions --------


async def test_the_session_middleware_alone_answers_503_when_its_store_is_unreachable(
    own_server: ValkeyProcess,
) -> None:
    async with redkit.connect(own_server.url, "outage", command_timeout=0.5) as rk:
        store = rk.sessions()
        live = await store.create("ada", {})

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("the app must not run without its session")

        transport = httpx.ASGITransport(app=SessionMiddleware(app, store, retry_after=7))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            own_server.kill()
            response = await http.get("/", headers={"authorization": f"Bearer {live.id}"})
    assert_unavailable(response)
    assert response.headers["retry-after"] == "7"


async def test_a_connection_lost_in_an_endpoint_is_a_503_with_or_without_sessions(
    own_server: ValkeyProcess,
) -> None:
    for sessions in (True, False):
        app = FastAPI()
        web = RedkitWeb(app, url=own_server.url, namespace="outage", sessions=sessions)

        @app.get("/fails")
        async def fails() -> None:
            raise ConnectionLost("the Redis server at 127.0.0.1:1 did not answer")

        async with web.running(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                assert_unavailable(await http.get("/fails"))


def test_the_login_handle_takes_int_user_ids(own_server: ValkeyProcess) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = FastAPI()
    RedkitWeb(app, url=own_server.url, namespace="ints")

    @app.post("/login")
    async def login(session: SessionDep) -> dict[str, str | None]:
        made = await session.login(42)  # an int, as most apps' user ids are
        return {"user": made.user_id}

    with TestClient(app) as client:
        assert client.post("/login").json() == {"user": "42"}
