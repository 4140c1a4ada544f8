"""SSE over a real HTTP server (uvicorn + httpx) and the WebSocket route (Starlette's client)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

import redkit
from redkit.embedded import find_free_port
from redkit.notify import NotificationBus
from redkit.notify.web import allow_all, notification_routes

with warnings.catch_warnings():
    # Starlette 1.x nudges TestClient users from httpx to httpx2; httpx works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """``app`` on a real uvicorn server on a free port, in this event loop."""
    port = find_free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        assert not task.done(), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class SSE:
    """Reads Server-Sent Events frames from a streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []
        self.retry: int | None = None

    async def frame(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        async with asyncio.timeout(10):
            async for line in self.lines:
                if not line:
                    if fields:
                        return fields
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                if name == "retry":
                    self.retry = int(value)
                    continue
                fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    async def events(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            frame = await self.frame()
            out.append({**frame, "json": orjson.loads(frame["data"])})
        return out

    async def first(self) -> None:
        """Wait for the opening ``retry:`` line: the subscription is live from then on."""
        async with asyncio.timeout(10):
            async for line in self.lines:
                if line.startswith("retry:"):
                    self.retry = int(line.partition(":")[2])
                    return
        raise AssertionError("no retry: line")


def app_for(bus: NotificationBus, **options: Any) -> Starlette:
    return Starlette(routes=notification_routes(bus, **options))


@pytest.mark.cluster
async def test_sse_client_reconnects_with_last_event_id_and_resumes(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    app = app_for(bus, authorize=allow_all, heartbeat=0.2, retry=1.5)
    params = {"channel": "deployment:status"}
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with http.stream("GET", "/events", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            stream = SSE(response)
            await stream.first()
            assert stream.retry == 1500
            sent = [await bus.publish("deployment:status", {"n": i}) for i in range(3)]
            events = await stream.events(3)
            assert [e["id"] for e in events] == sent
            assert events[0]["json"] == {
                "id": sent[0],
                "channel": "deployment:status",
                "time": pytest.approx(int(sent[0].split("-")[0]) / 1000),
                "data": {"n": 0},
            }
            await asyncio.sleep(0.5)
            await bus.publish("deployment:status", {"n": 3})
            [fourth] = await stream.events(1)
            assert stream.comments, "heartbeats are sent while nothing happens"
        # Disconnected: these are missed live, then resumed from history.
        missed = [await bus.publish("deployment:status", {"n": i}) for i in range(4, 9)]
        headers = {"Last-Event-ID": fourth["id"]}
        async with http.stream("GET", "/events", params=params, headers=headers) as response:
            stream = SSE(response)
            await stream.first()
            resumed = await stream.events(5)
            assert [e["id"] for e in resumed] == missed
            live = await bus.publish("deployment:status", {"n": 9})
            [event] = await stream.events(1)
            assert event["id"] == live


async def test_sse_cursor_covers_several_channels_and_a_gap_is_an_event(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications(history=3)
    app = app_for(bus, authorize=allow_all, authorize_patterns=allow_all)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("channel", "a"),
        ("pattern", "b:*"),
    ]
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with http.stream("GET", "/events", params=params) as response:
            stream = SSE(response)
            await stream.first()
            await bus.publish("a", 1)
            await bus.publish("b:x", 2)
            _, second = await stream.events(2)
        cursor = second["id"]
        assert "a=" in cursor
        assert "b%3Ax=" in cursor
        for i in range(5):  # more than history keeps
            await bus.publish("b:x", i)
        async with http.stream("GET", "/events", params=[*params, ("last_event_id", cursor)]) as r:
            stream = SSE(r)
            await stream.first()
            gap = await stream.frame()
            assert gap["event"] == "gap"
            assert "id" not in gap
            assert orjson.loads(gap["data"])["data"]["reason"] == "history_trimmed"
            kept = await stream.events(3)
            assert [e["json"]["data"] for e in kept] == [2, 3, 4]


async def test_sse_authorize_hook_decides_the_channels(rk: redkit.Redkit) -> None:
    bus = rk.notifications()

    async def members_only(conn: HTTPConnection, names: list[str]) -> list[str]:
        project = conn.headers.get("x-project", "")
        return [n for n in names if n == "system:alert" or n.startswith(f"project:{project}:")]

    app = app_for(bus, authorize=members_only)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        refused = await http.get("/events", params={"channel": "project:p2:deploys"})
        assert refused.status_code == 403
        assert (await http.get("/events")).status_code == 400
        bad = await http.get(
            "/events", params={"channel": "system:alert"}, headers={"Last-Event-ID": "x=y"}
        )
        assert bad.status_code == 400
        assert "not an event id" in bad.text
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("channel", "project:p1:deploys"),
            ("channel", "project:p2:deploys"),
        ]
        headers = {"x-project": "p1"}
        async with http.stream("GET", "/events", params=params, headers=headers) as response:
            stream = SSE(response)
            await stream.first()
            await bus.publish("project:p2:deploys", "not yours")
            await bus.publish("project:p1:deploys", "yours")
            [event] = await stream.events(1)
            assert event["json"]["data"] == "yours"


# -- WebSocket: uvicorn needs the `websockets` or `wsproto` package for WebSocket, which the
# venv does not have; Starlette's TestClient runs the ASGI app in its own event loop, so the
# app makes its Redkit in a lifespan (the way a FastAPI app would).


@pytest.fixture
def ws_app(redis_url: str, namespace: str) -> Iterator[TestClient]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with redkit.connect(redis_url, namespace) as rk:
            app.state.bus = rk.notifications(cluster_patterns=True)
            yield
            async for key in rk.redis.scan_iter(match=rk.keys.pattern):
                await rk.redis.unlink(key)

    def bus_of(conn: HTTPConnection) -> NotificationBus:
        bus: NotificationBus = conn.app.state.bus
        return bus

    def public_only(conn: HTTPConnection, names: list[str]) -> list[str]:
        return [n for n in names if not n.startswith("secret")]

    app = Starlette(routes=notification_routes(bus_of, authorize=public_only), lifespan=lifespan)
    with TestClient(app) as client:
        yield client


def publish(client: TestClient, channel: str, data: Any) -> str:
    assert client.portal is not None
    bus: NotificationBus = client.app.state.bus  # type: ignore[attr-defined]
    result: str = client.portal.call(bus.publish, channel, data)
    return result


@pytest.mark.cluster
def test_websocket_receives_events_and_resumes_from_its_cursor(ws_app: TestClient) -> None:
    with ws_app.websocket_connect("/ws?channel=system:alert&channel=deployment:status") as ws:
        first = publish(ws_app, "system:alert", {"level": "warn"})
        message = ws.receive_json()
        assert message == {
            "type": "event",
            "id": first,
            "channel": "system:alert",
            "time": pytest.approx(int(first.split("-")[0]) / 1000),
            "cursor": message["cursor"],
            "data": {"level": "warn"},
        }
        publish(ws_app, "deployment:status", "building")
        cursor = ws.receive_json()["cursor"]
    missed = [publish(ws_app, "deployment:status", i) for i in range(3)]
    query = urlencode(
        [("channel", "system:alert"), ("channel", "deployment:status"), ("last_event_id", cursor)]
    )
    with ws_app.websocket_connect(f"/ws?{query}") as ws:
        assert [ws.receive_json()["id"] for _ in range(3)] == missed


def test_websocket_refuses_channels_the_hook_denies(ws_app: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        ws_app.websocket_connect("/ws?channel=secret:plans") as ws,
    ):
        ws.receive_json()
    assert refused.value.code == 1008
