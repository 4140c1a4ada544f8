"""Attacks on the rate-limit middleware (issue 13): client addresses, proxies, IPv6, Unix
sockets, WebSocket handshakes, and the agreement of Retry-After with RateLimit.

Real uvicorn on loopback wherever the server shapes what the middleware sees. uvicorn's own
proxy handling (on by default for 127.0.0.1) is switched off where the test plays the
proxy, so that the middleware's reading of X-Forwarded-For is what is tested.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import redkit
from ratelimit.helpers import hello, identify
from redkit.ratelimit.middleware import RateLimitMiddleware
from redkit.ratelimit.policy import TierPolicy, client_ip
from uvicorn_server import serve_in_loop

TEN = {"anonymous": [(10, 60)], "user": [(5, 60)]}
THREE = {"anonymous": [(3, 60)], "user": [(3, 60)], "premium": [(2, 1), (50, 3600)]}


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def make_app(policy: Any, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", echo)])
    app.add_middleware(RateLimitMiddleware, policy=policy, **options)
    return app


def serve(app: Any, **config: Any) -> AbstractAsyncContextManager[str]:
    """``app`` on a real uvicorn server in this loop; yields its base URL (or socket path)."""
    return serve_in_loop(
        app, lifespan="off", ws="websockets-sansio", timeout_graceful_shutdown=1, **config
    )


def asgi_client(app: Any, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 4711))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def limit_keys(rk: redkit.Redkit) -> list[str]:
    keys = [k.decode() async for k in rk.redis.scan_iter(match=f"{rk.namespace}:*")]
    # Not the "most limited" rankings (rltop): their names are the limiters', not the keys'.
    return sorted(k for k in keys if not k.startswith(f"{rk.namespace}:{{rltop:"))


# -- 5. X-Forwarded-For through a trusted proxy ------------------------------------------


async def test_a_line_of_x_forwarded_for_sent_by_the_client_never_chooses_its_key(
    rk: redkit.Redkit,
) -> None:
    # The test is the proxy on 127.0.0.1: the client's own line arrives first, then the line
    # the proxy appends with the address it saw.
    policy = TierPolicy(rk, identify, tiers=TEN, trusted_proxies=["127.0.0.1"])
    async with (
        serve(make_app(policy), proxy_headers=False) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        statuses = []
        for i in range(30):
            headers = [("X-Forwarded-For", f"198.51.100.{i}"), ("X-Forwarded-For", "203.0.113.7")]
            statuses.append((await client.get("/", headers=headers)).status_code)
    assert statuses.count(200) == 10
    assert statuses[10:] == [429] * 20
    assert [k.rsplit(":", 1)[0] for k in await limit_keys(rk)] == [
        f"{rk.namespace}:{{rl:ip:203.0.113.7}}"
    ]


async def test_a_hop_that_is_not_an_ip_address_is_never_a_key(rk: redkit.Redkit) -> None:
    policy = TierPolicy(rk, identify, tiers=TEN, trusted_proxies=["127.0.0.1"])
    junk = "x" * 12_000
    async with (
        serve(make_app(policy), proxy_headers=False) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for header in (junk, f"{junk}, 10.9.9.9", "<script>", "1.2.3.4.5"):
            response = await client.get("/", headers={"X-Forwarded-For": header})
            assert response.status_code in (200, 429)
    # Everything that was not an address was charged to the proxy that passed it on.
    keys = await limit_keys(rk)
    assert len(keys) == 2
    assert all(len(k) < 100 for k in keys)
    assert {k.split("{rl:")[1].split("}")[0] for k in keys} == {"ip:127.0.0.1", "ip:10.9.9.9"}


def test_every_forwarded_for_line_is_one_list_walked_from_the_right() -> None:
    from redkit.ratelimit.policy import TrustedProxies

    trusted = TrustedProxies(["10.0.0.0/8"])
    scope = {
        "client": ("10.0.0.1", 1),
        "headers": [
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-forwarded-for", b"198.51.100.7, 10.0.0.2"),
        ],
    }
    assert client_ip(scope, trusted) == "198.51.100.7"
    # Only trusted hops: the request came from inside; the leftmost hop is its origin.
    inside = {"client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-for", b"10.1.1.1, 10.0.0.2")]}
    assert client_ip(inside, trusted) == "10.1.1.1"


# -- 6. IPv6 networks and spellings -------------------------------------------------------


async def test_five_spellings_of_one_address_share_one_limit(rk: redkit.Redkit) -> None:
    policy = TierPolicy(rk, identify, tiers=THREE, trusted_proxies=["127.0.0.1"])
    spellings = [
        "2001:db8::1",
        "2001:DB8::1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "[2001:db8::1]:443",
        "2001:db8:0:0::1%eth0",
    ]
    async with (
        serve(make_app(policy), proxy_headers=False) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        statuses = [
            (await client.get("/", headers={"X-Forwarded-For": s})).status_code for s in spellings
        ]
    assert statuses == [200, 200, 200, 429, 429]


async def test_one_ipv6_64_shares_one_limit_and_the_prefix_is_configurable(
    rk: redkit.Redkit,
) -> None:
    addresses = [f"2001:db8:1:2::{i:x}" for i in range(1, 5)] + ["2001:db8:1:2:ffff:1:2:3"]
    app = make_app(TierPolicy(rk, identify, tiers=THREE))
    statuses = []
    for address in addresses:
        async with asgi_client(app, address) as client:
            statuses.append((await client.get("/")).status_code)
    assert statuses == [200, 200, 200, 429, 429]
    async with asgi_client(app, "2001:db8:1:3::1") as client:  # the next /64: its own limit
        assert (await client.get("/")).status_code == 200

    per_address = make_app(TierPolicy(rk, identify, tiers=THREE, ipv6_prefix=128))
    for address in addresses:
        async with asgi_client(per_address, address) as client:
            assert (await client.get("/")).status_code == 200


async def test_an_ipv4_mapped_peer_is_its_ipv4_address(rk: redkit.Redkit) -> None:
    # A trusted proxy seen through a dual-stack socket is still trusted...
    trusting = make_app(TierPolicy(rk, identify, tiers=THREE, trusted_proxies=["10.0.0.0/8"]))
    async with asgi_client(trusting, "::ffff:10.0.0.5") as client:
        statuses = [
            (await client.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
            for i in range(5)
        ]
    assert statuses == [200] * 5
    # ...and a client is one client in either spelling, with a port in the header or not.
    app = make_app(TierPolicy(rk, identify, tiers=THREE))
    statuses = []
    for peer in ("::ffff:203.0.113.9", "203.0.113.9", "::ffff:cb00:7109", "203.0.113.9"):
        async with asgi_client(app, peer) as client:
            statuses.append((await client.get("/")).status_code)
    assert statuses == [200, 200, 200, 429]
    proxied = make_app(TierPolicy(rk, identify, tiers=THREE, trusted_proxies=["10.0.0.1"]))
    async with asgi_client(proxied, "10.0.0.1") as client:
        hops = ["192.0.2.44:1111", "192.0.2.44:2222", "192.0.2.44", "[::ffff:192.0.2.44]:80"]
        statuses = [
            (await client.get("/", headers={"X-Forwarded-For": hop})).status_code for hop in hops
        ]
    assert statuses == [200, 200, 200, 429]


# -- 11. Unix sockets ------------------------------------------------------------------


async def test_behind_a_unix_socket_a_trusted_proxy_names_each_client(
    rk: redkit.Redkit, tmp_path: Path
) -> None:
    policy = TierPolicy(rk, identify, tiers=THREE, trusted_proxies=["unix"])
    transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "app.sock"))
    async with (
        serve(make_app(policy), uds=str(tmp_path / "app.sock")),
        httpx.AsyncClient(transport=transport, base_url="http://proxy") as client,
    ):
        burst = [
            (await client.get("/", headers={"X-Forwarded-For": "198.51.100.1"})).status_code
            for _ in range(4)
        ]
        other = await client.get("/", headers={"X-Forwarded-For": "198.51.100.2"})
    assert burst == [200, 200, 200, 429]
    assert other.status_code == 200  # one client's burst did not limit another


async def test_a_request_without_any_address_is_pooled_loudly(
    rk: redkit.Redkit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = TierPolicy(rk, identify, tiers=THREE)  # the socket's proxy is not trusted
    transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "app.sock"))
    with caplog.at_level(logging.WARNING, logger="redkit.ratelimit"):
        async with (
            serve(make_app(policy), uds=str(tmp_path / "app.sock")),
            httpx.AsyncClient(transport=transport, base_url="http://proxy") as client,
        ):
            for i in range(3):
                await client.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})
    warnings = [r for r in caplog.records if "ip:unknown" in r.getMessage()]
    assert len(warnings) == 1  # once, not per request
    assert "'unix'" in warnings[0].getMessage()


def test_unix_is_the_only_word_trusted_proxies_accept() -> None:
    from redkit.ratelimit.policy import TrustedProxies

    assert TrustedProxies(["unix"]).unix
    assert not TrustedProxies(["10.0.0.1"]).unix
    with pytest.raises(redkit.InvalidInput, match="unix"):
        TrustedProxies(["localhost"])


# -- 7. WebSocket handshakes -----------------------------------------------------------


async def test_websocket_handshakes_are_limited_with_a_429_before_accept(
    rk: redkit.Redkit,
) -> None:
    app = make_app(TierPolicy(rk, identify, tiers=THREE))
    async with serve(app) as url:
        ws_url = url.replace("http://", "ws://") + "/ws"
        greetings = []
        for _ in range(3):
            async with websockets.connect(ws_url) as ws:
                greetings.append(await ws.recv())
                assert ws.response is not None
                assert ws.response.headers["RateLimit-Policy"] == '"anonymous";q=3;w=60'
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url):
                pass
        async with httpx.AsyncClient(base_url=url) as client:
            http = await client.get("/")
    assert greetings == ["hi"] * 3
    response = refused.value.response
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert orjson.loads(response.body)["error"] == "rate_limited"
    assert http.status_code == 429  # the sockets counted against the HTTP limit too


async def test_without_the_http_response_extension_a_handshake_is_closed_1008(
    rk: redkit.Redkit,
) -> None:
    policy = TierPolicy(rk, identify, tiers={"anonymous": [(1, 60)]})
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async def handshake() -> list[dict[str, Any]]:
        sent.clear()
        scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("192.0.2.1", 1)}
        events = [{"type": "websocket.connect"}]

        async def receive() -> dict[str, Any]:
            return events.pop(0) if events else {"type": "websocket.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        await RateLimitMiddleware(app, policy)(scope, receive, send)
        return list(sent)

    accepted = await handshake()
    assert accepted[0]["type"] == "websocket.accept"
    assert any(name == b"ratelimit" for name, _ in accepted[0]["headers"])
    assert await handshake() == [
        {"type": "websocket.close", "code": 1008, "reason": "rate limited"}
    ]


# -- 8. Retry-After and RateLimit agree ------------------------------------------------


def _t(header: str, policy: str) -> int:
    found = re.search(rf'"{re.escape(policy)}";r=\d+;t=(\d+)', header)
    assert found, header
    return int(found[1])


@pytest.mark.parametrize("algorithm", ["sliding_window", "fixed_window", "sliding_log", "gcra"])
async def test_a_429_says_the_same_wait_in_retry_after_and_ratelimit(
    rk: redkit.Redkit, algorithm: str
) -> None:
    # Minute windows: a 1 s fixed window is crossed between two requests now and then (its
    # windows are aligned to the server clock), and the third request would be allowed.
    tiers = {**THREE, "premium": [(2, 60), (50, 3600)]}
    policy = TierPolicy(rk, identify, tiers=tiers, algorithm=algorithm)
    async with (
        serve(make_app(policy, legacy_headers=True)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for _ in range(3):
            await client.get("/")
        limited = await client.get("/")
        premium = [(await client.get("/", headers={"X-User": "premium:1"})) for _ in range(3)]
    assert limited.status_code == 429
    wait = int(limited.headers["retry-after"])
    assert _t(limited.headers["ratelimit"], "anonymous") == wait
    assert int(limited.headers["x-ratelimit-reset"]) == wait
    # Several limits: the one that rejects carries the wait.
    assert premium[2].status_code == 429
    assert _t(premium[2].headers["ratelimit"], "premium:2/60s") == int(
        premium[2].headers["retry-after"]
    )


# -- 17 (in part). A key past its bound over HTTP ---------------------------------------


async def test_an_identity_too_long_for_a_key_is_a_400_with_json_not_a_500(
    rk: redkit.Redkit,
) -> None:
    app = make_app(TierPolicy(rk, identify, tiers=THREE))
    async with asgi_client(app, "192.0.2.1") as client:
        response = await client.get("/", headers={"X-User": "user:" + "u" * 600})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "512 bytes" in response.json()["message"]
    assert await limit_keys(rk) == []
