"""redkit's own ``@limiter.limit("5/minute")`` on Flask views: headers, a JSON 429, keys by
client address (redkit's rules) or by signed-in user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from flask import Flask

from redkit.errors import InvalidInput
from redkit.flask import Limiter, parse_rate


def test_the_fourth_request_in_a_minute_gets_a_json_429_with_retry_after(app: Flask) -> None:
    client = app.test_client()
    remaining = []
    for _ in range(3):
        response = client.get("/limited")
        assert response.status_code == 200
        assert response.json == {"ok": True}
        assert "q=3;w=60" in response.headers["RateLimit-Policy"]
        remaining.append(response.headers["RateLimit"].split(";r=")[1].split(";")[0])
    assert remaining == ["2", "1", "0"]
    refused = client.get("/limited")
    assert refused.status_code == 429
    assert refused.json is not None
    assert refused.json["error"] == "rate_limited"
    assert refused.json["limit"] == 3
    assert 1 <= int(refused.headers["Retry-After"]) <= 120
    assert refused.headers["Cache-Control"] == "no-store"


def test_each_client_address_has_its_own_count(app: Flask) -> None:
    first = app.test_client()
    second = app.test_client()
    for _ in range(3):
        assert first.get("/limited", environ_base={"REMOTE_ADDR": "203.0.113.1"}).status_code == 200
    assert first.get("/limited", environ_base={"REMOTE_ADDR": "203.0.113.1"}).status_code == 429
    assert second.get("/limited", environ_base={"REMOTE_ADDR": "203.0.113.2"}).status_code == 200


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(app: Flask) -> None:
    client = app.test_client()
    peer = {"REMOTE_ADDR": "203.0.113.9"}
    for n in range(3):
        forged = {"X-Forwarded-For": f"198.51.100.{n}"}
        assert client.get("/limited", headers=forged, environ_base=peer).status_code == 200
    forged = {"X-Forwarded-For": "198.51.100.77"}
    assert client.get("/limited", headers=forged, environ_base=peer).status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(make_app: Any) -> None:
    app = make_app(REDKIT_TRUSTED_PROXIES=["10.0.0.0/8"])
    client = app.test_client()
    proxy = {"REMOTE_ADDR": "10.1.2.3"}
    for _ in range(3):
        hop = {"X-Forwarded-For": "198.51.100.1"}
        assert client.get("/limited", headers=hop, environ_base=proxy).status_code == 200
    assert (
        client.get(
            "/limited", headers={"X-Forwarded-For": "198.51.100.1"}, environ_base=proxy
        ).status_code
        == 429
    )
    other = {"X-Forwarded-For": "198.51.100.2"}
    assert client.get("/limited", headers=other, environ_base=proxy).status_code == 200


def test_an_ipv6_client_is_counted_by_its_64_network(app: Flask) -> None:
    client = app.test_client()
    for n in range(3):
        peer = {"REMOTE_ADDR": f"2001:db8:1:2::{n + 1}"}
        assert client.get("/limited", environ_base=peer).status_code == 200
    peer = {"REMOTE_ADDR": "2001:db8:1:2:ffff::1"}
    assert client.get("/limited", environ_base=peer).status_code == 429


def test_user_or_ip_counts_a_signed_in_user_across_addresses(app: Flask) -> None:
    client = app.test_client()
    client.post("/login", json={"user": "alice"})
    for n in range(2):
        peer = {"REMOTE_ADDR": f"203.0.113.{n + 1}"}
        assert client.get("/per-user", environ_base=peer).status_code == 200
    assert client.get("/per-user", environ_base={"REMOTE_ADDR": "203.0.113.50"}).status_code == 429
    # An anonymous caller from one of those addresses still has its own count.
    anonymous = app.test_client()
    assert (
        anonymous.get("/per-user", environ_base={"REMOTE_ADDR": "203.0.113.1"}).status_code == 200
    )


def test_methods_limit_only_the_methods_named(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/limited-post").status_code == 200
    assert client.post("/limited-post").status_code == 429


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        ("5/minute", (5, 60.0)),
        ("100 per hour", (100, 3600.0)),
        ("10/30 seconds", (10, 30.0)),
        ("3/s", (3, 1.0)),
        ("2/D", (2, 86400.0)),
    ],
)
def test_rates_are_written_as_count_per_unit(rate: str, expected: tuple[int, float]) -> None:
    assert parse_rate(rate) == expected


@pytest.mark.parametrize("rate", ["", "5", "five/minute", "5/fortnight", "5/0 seconds", "-1/s"])
def test_a_bad_rate_is_refused_when_the_view_is_decorated(rate: str) -> None:
    with pytest.raises(InvalidInput):
        Limiter().limit(rate)


def test_the_429_comes_through_a_real_server(app: Flask, serve: Callable[[Flask], str]) -> None:
    base = serve(app)
    codes = [httpx.get(base + "/limited").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = httpx.get(base + "/limited")
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"] == "rate_limited"
    assert "retry-after" in refused.headers
