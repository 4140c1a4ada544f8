"""The README's FastAPI service, end to end: under ``uvicorn`` in its own process, and under
Starlette's ``TestClient``. Sessions, a cached route, a rate-limited route, SSE, a job
enqueued under a lock and run by the app's worker."""

from __future__ import annotations

import asyncio
import signal
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson

import redkit
from redkit.web import RedkitWeb
from web.helpers import uvicorn_app

with warnings.catch_warnings():
    # Starlette 1.x nudges TestClient users from httpx to httpx2; httpx works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """Frames of a text/event-stream: ``{"retry": ...}`` first, then events."""
    fields: dict[str, str] = {}
    async for line in lines:
        if not line:
            if fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def running(web: RedkitWeb) -> bool:
    return web.started


async def wait_for_state(http: httpx.AsyncClient, job_id: str, state: str) -> dict[str, object]:
    for _ in range(200):  # bounded: 10 s
        body: dict[str, object] = (await http.get(f"/orders/{job_id}")).json()
        if body["state"] == state:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {state}: {body}")


async def test_the_readme_service_runs_under_uvicorn_end_to_end(
    rk: redkit.Redkit, redis_url: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": redis_url, "REDKIT_NAMESPACE": rk.namespace}
    async with (
        uvicorn_app("web.service:app", env, tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        httpx.AsyncClient(base_url=served.url, timeout=10) as listener,
    ):
        # Sessions: plain HTTP on 127.0.0.1 keeps the cookie (no Secure), so /me works.
        assert (await http.get("/me")).status_code == 401
        login = await http.post("/login", params={"name": "ada"})
        assert login.json() == {"user": "ada"}
        assert "HttpOnly" in login.headers["set-cookie"]
        assert (await http.get("/me")).json() == {"user": "ada"}

        # The cached route: the first anonymous request computes, the second is a hit.
        first = await listener.get("/products")
        second = await listener.get("/products")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        assert second.json() == ["tea", "cake"]

        # The rate-limited route: 5 a minute per user.
        statuses = [(await http.get("/search", params={"q": "t"})).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]

        # SSE, a job under a lock, and the app's worker.
        async with listener.stream("GET", "/events", params={"channel": "orders"}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream.aiter_lines())
            async with asyncio.timeout(10):
                opening = await anext(events)
                assert "retry" in opening  # subscribed from here on
                placed = await http.post("/orders", params={"item": "tea"})
                assert placed.status_code == 202
                event = await anext(events)
        assert orjson.loads(event["data"])["data"] == {"shipped": "tea", "to": "ada"}
        done = await wait_for_state(http, placed.json()["job"], "completed")
        assert done["result"] == "tea shipped"
        # The lock was released when the order was queued.
        assert not await rk.redis.exists(rk.keys.group("lock", "stock:tea").key("owner"))
        assert (await http.post("/orders", params={"item": "tea"})).status_code == 202
        # Ordering needs a session.
        assert (await listener.post("/orders", params={"item": "cake"})).status_code == 401
    assert "Application startup complete" in served.output()


async def test_ctrl_c_ends_the_open_event_streams_so_uvicorn_stops(
    rk: redkit.Redkit, redis_url: str, tmp_path: Path
) -> None:
    # uvicorn waits for open responses before it shuts down, and an event stream never ends
    # by itself: it used to hang on Ctrl-C for as long as a browser tab listened.
    env = {"REDIS_URL": redis_url, "REDKIT_NAMESPACE": rk.namespace}
    async with (
        uvicorn_app("web.service:app", env, tmp_path, stop=signal.SIGINT) as served,
        httpx.AsyncClient(base_url=served.url, timeout=30) as listener,
        listener.stream("GET", "/events", params={"channel": "orders"}) as stream,
    ):
        events = sse_events(stream.aiter_lines())
        assert "retry" in await anext(events)
        served.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            left = [event async for event in events]
        assert left == []  # the server ended the stream
        await asyncio.wait_for(served.process.wait(), 30)
    assert "Application shutdown complete" in served.output()


def test_the_readme_service_runs_under_testclient(rk_env: dict[str, str]) -> None:
    from web import service

    # Twice: each `with` is a start-up and a shutdown, each in an event loop of its own.
    for round_ in range(2):
        with TestClient(service.app) as client:
            assert running(service.web)
            assert client.get("/me").status_code == 401
            # http://testserver is this machine: the cookie has no Secure, and is sent back.
            login = client.post("/login", params={"name": f"grace{round_}"})
            assert "Secure" not in login.headers["set-cookie"]
            assert client.get("/me").json() == {"user": f"grace{round_}"}
            statuses = [client.get("/search", params={"q": "c"}).status_code for _ in range(6)]
            assert statuses == [200] * 5 + [429]
            job = client.post("/orders", params={"item": "cake"}).json()["job"]
            for _ in range(200):  # bounded: 10 s
                state = client.get(f"/orders/{job}").json()
                if state["state"] == "completed":
                    break
                time.sleep(0.05)
            assert state == {"state": "completed", "result": "cake shipped"}
            client.cookies.clear()  # anonymous: the shared page cache applies
            hits = [client.get("/products").headers["x-cache"] for _ in range(2)]
            assert hits == (["MISS", "HIT"] if round_ == 0 else ["HIT", "HIT"])
        assert not running(service.web)
        assert not hasattr(service.app.state, "redkit")
