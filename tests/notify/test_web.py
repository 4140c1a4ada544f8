"""SSE over a real HTTP server (uvicorn + httpx) and the WebSocket route (Starlette's client)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import redkit
from redkit.notify import NotificationBus, encode_cursor
from redkit.notify.web import allow_all, notification_routes, pattern_prefix
from uvicorn_server import serve_in_loop

with warnings.catch_warnings():
    # Starlette 1.x nudges TestClient users from httpx to httpx2; httpx works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def serve(app: Starlette) -> AbstractAsyncContextManager[str]:
    """``app`` on a real uvicorn server on a free port, in this event loop."""
    return serve_in_loop(app, lifespan="off", timeout_graceful_shutdown=1)


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


# -- hardening: everything in a query string or a header is written by the attacker ----------


@pytest.mark.timeout(60)
async def test_a_pattern_with_many_stars_and_a_cursor_does_not_stall_the_server(
    rk: redkit.Redkit,
) -> None:
    bus = rk.notifications()
    app = app_for(bus, authorize=allow_all, authorize_patterns=allow_all)
    pattern = "project:p1:" + "*a" * 40 + "*b"
    cursor = encode_cursor({"project:p1:" + "a" * 240: "1-0"})
    params = {"pattern": pattern}
    headers = {"Last-Event-ID": cursor}
    async with (
        serve(app) as base,
        httpx.AsyncClient(base_url=base, timeout=20) as http,
        http.stream("GET", "/events", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200
        await SSE(response).first()
        # The server still answers others while that stream is open.
        assert (await http.get("/events")).status_code == 400


async def test_a_channel_check_never_grants_a_pattern_spelt_the_same(rk: redkit.Redkit) -> None:
    bus = rk.notifications()

    def own_channel(conn: HTTPConnection, names: list[str]) -> list[str]:
        # The natural hook for "a user reads their own channel"; this user's id is "*".
        return [n for n in names if n == "user:" + conn.headers["x-user-id"]]

    app = app_for(bus, authorize=own_channel)
    headers = {"x-user-id": "*"}
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        refused = await http.get("/events", params={"pattern": "user:*"}, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
        # As a channel, "user:*" is that one channel, not everyone's.
        async with http.stream(
            "GET", "/events", params={"channel": "user:*"}, headers=headers
        ) as response:
            stream = SSE(response)
            await stream.first()
            await bus.publish("user:42", "private to user 42")
            await bus.publish("user:*", "to the user whose id is *")
            [event] = await stream.events(1)
            assert event["json"]["data"] == "to the user whose id is *"


async def test_a_pattern_hook_grants_patterns_by_their_literal_prefix(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    seen: list[tuple[str, list[str]]] = []

    def channels(conn: HTTPConnection, names: list[str]) -> list[str]:
        seen.append(("channels", names))
        return names

    def members(conn: HTTPConnection, patterns: list[str]) -> list[str]:
        seen.append(("patterns", patterns))
        return [p for p in patterns if pattern_prefix(p).startswith("project:p1:")]

    app = app_for(bus, authorize=channels, authorize_patterns=members)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        for pattern in ("project:p1*", "*", "project:p[12]:*", "project:p1?*"):
            answer = await http.get("/events", params={"pattern": pattern})
            assert answer.status_code == 403, pattern
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("channel", "system:alert"),
            ("pattern", "project:p1:*"),
        ]
        async with http.stream("GET", "/events", params=params) as response:
            stream = SSE(response)
            await stream.first()
            await bus.publish("project:p10:x", "not yours")
            await bus.publish("project:p1:x", "yours")
            [event] = await stream.events(1)
            assert event["json"]["data"] == "yours"
    assert ("channels", ["system:alert"]) in seen
    assert ("patterns", ["project:p1:*"]) in seen
    assert all(names for _, names in seen)  # a hook is not called with nothing to decide


@pytest.mark.parametrize(
    ("params", "headers", "status", "message"),
    [
        ({"channel": [f"c:{i}" for i in range(101)]}, {}, 413, "at most 100"),
        ({"channel": [f"c:{i}" for i in range(900)]}, {}, 413, "at most 100"),
        ({"channel": "a", "x": [str(i) for i in range(1100)]}, {}, 413, "query parameters"),
        ({"channel": "x" * 257}, {}, 400, "limit is 256"),
        ({"channel": "a"}, {"Last-Event-ID": "99999999999999999999-0"}, 400, "not an event id"),
        ({"channel": "a"}, {"Last-Event-ID": "1-0;" * 300}, 400, "at most 256"),
        ({"channel": "a"}, {"Last-Event-ID": "a=" + "9" * 5000}, 400, "not an event id"),
        ({"channel": "a", "last_event_id": "%%%"}, {}, 400, "neither an event id"),
        ({"pattern": "a[bc"}, {}, 400, "without its"),
        ({"pattern": "a\\"}, {}, 400, "backslash"),
    ],
)
async def test_hostile_query_strings_and_headers_get_a_clear_4xx_in_json(
    rk: redkit.Redkit,
    params: dict[str, Any],
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    bus = rk.notifications()
    app = app_for(bus, authorize=allow_all, authorize_patterns=allow_all)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        answer = await http.get("/events", params=params, headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert message in answer.json()["message"]


# -- WebSocket over uvicorn (the `websockets` package speaks the client side) ----------------


def _cookie_auth(conn: HTTPConnection, names: list[str]) -> list[str]:
    """Readers are known by a session cookie, which a browser sends from any site."""
    return names if conn.cookies.get("sid") == "alice" else []


async def _ws_receives(
    url: str, bus: NotificationBus, origin: str | None, channel: str = "user:alice"
) -> Any:
    """Open the socket as a browser would (with the user's cookie); return the first event,
    or the handshake's refusal."""
    headers = {"Cookie": "sid=alice"}
    if origin is not None:
        headers["Origin"] = origin
    try:
        async with ws_connect(url + f"/ws?channel={channel}", additional_headers=headers) as ws:
            await bus.publish(channel, "private")
            async with asyncio.timeout(10):
                return orjson.loads(await ws.recv())["data"]
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_websocket_refuses_a_page_of_another_origin(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    app = app_for(bus, authorize=_cookie_auth)
    async with serve(app) as base:
        url = base.replace("http", "ws")
        assert await _ws_receives(url, bus, "http://evil.example") == 403
        assert await _ws_receives(url, bus, "null") == 403
        assert await _ws_receives(url, bus, base.replace("127.0.0.1", "localhost")) == 403
        assert await _ws_receives(url, bus, base) == "private"  # the page's own origin
        assert await _ws_receives(url, bus, None) == "private"  # not a browser


async def test_websocket_origins_can_be_listed_or_opened_explicitly(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    listed = app_for(bus, authorize=_cookie_auth, allowed_origins=["https://App.example"])
    async with serve(listed) as base:
        url = base.replace("http", "ws")
        assert await _ws_receives(url, bus, "https://app.example") == "private"
        assert await _ws_receives(url, bus, "https://app.example:443") == "private"
        assert await _ws_receives(url, bus, "http://app.example") == 403
        assert await _ws_receives(url, bus, base) == 403  # listing replaces the default
    anyone = app_for(bus, authorize=_cookie_auth, allowed_origins="*")
    async with serve(anyone) as base:
        url = base.replace("http", "ws")
        assert await _ws_receives(url, bus, "http://evil.example") == "private"
    with pytest.raises(redkit.ConfigurationError, match="not an origin"):
        app_for(bus, authorize=allow_all, allowed_origins=["app.example/path"])


async def test_websocket_bad_requests_close_with_1008_and_the_reason(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    app = app_for(bus, authorize=allow_all)
    async with serve(app) as base:
        url = base.replace("http", "ws")
        query = urlencode([("channel", f"c:{i}") for i in range(101)])
        for path in (f"/ws?{query}", "/ws?channel=a&last_event_id=99999999999999999999-0"):
            async with ws_connect(url + path) as ws:
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10):
                        await ws.recv()
            assert ws.close_code == 1008
            assert ws.close_reason
        assert "at most 100" in (await _close_reason(url + f"/ws?{query}"))


async def _close_reason(url: str) -> str:
    async with ws_connect(url) as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await ws.recv()
    return ws.close_reason or ""
