"""``redkit.django.ratelimit``: django-ratelimit's arguments on redkit's limiters, through the
test client, on sync and async views."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client

from redkit.django.ratelimit import parse_rate, ratelimit
from redkit.errors import ConfigurationError

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("limits")]


def test_the_third_request_in_a_minute_gets_a_429_with_the_standard_headers() -> None:
    client = Client(REMOTE_ADDR="10.0.0.1")
    first = client.get("/limited/")
    assert first.status_code == 200
    assert "RateLimit" in first.headers
    assert client.get("/limited/").status_code == 200
    third = client.get("/limited/")
    assert third.status_code == 429
    assert third.json()["error"] == "rate_limited"
    # A sliding window frees room as the previous window fades: up to two windows away.
    assert 1 <= int(third.headers["Retry-After"]) <= 120
    assert third.headers["X-RateLimit-Remaining"] == "0"
    assert "RateLimit-Policy" in third.headers


def test_each_client_address_has_its_own_bucket_and_forwarded_headers_are_not_trusted() -> None:
    one = Client(REMOTE_ADDR="10.0.0.1")
    two = Client(REMOTE_ADDR="10.0.0.2")
    for _ in range(2):
        assert one.get("/limited/", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 200
    assert one.get("/limited/", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 429
    assert two.get("/limited/").status_code == 200


def test_ipv6_addresses_of_one_64_share_a_bucket() -> None:
    assert Client(REMOTE_ADDR="2001:db8::1").get("/limited/").status_code == 200
    assert Client(REMOTE_ADDR="2001:db8::2").get("/limited/").status_code == 200
    assert Client(REMOTE_ADDR="2001:db8::3").get("/limited/").status_code == 429
    assert Client(REMOTE_ADDR="2001:db8:0:1::1").get("/limited/").status_code == 200


async def test_an_async_view_is_limited_on_the_async_client() -> None:
    client = AsyncClient(REMOTE_ADDR="10.0.0.9")
    assert (await client.get("/alimited/")).status_code == 200
    assert (await client.get("/alimited/")).status_code == 200
    third = await client.get("/alimited/")
    assert third.status_code == 429
    assert "Retry-After" in third.headers


def test_block_false_calls_the_view_with_request_limited_set() -> None:
    client = Client()
    assert client.get("/soft/", HTTP_X_API_KEY="k1").json() == {"limited": False}
    assert client.get("/soft/", HTTP_X_API_KEY="k1").json() == {"limited": True}
    assert client.get("/soft/", HTTP_X_API_KEY="k2").json() == {"limited": False}


def test_only_the_methods_named_are_counted() -> None:
    client = Client(REMOTE_ADDR="10.0.0.3")
    for _ in range(3):
        assert client.get("/writes/").status_code == 200
    assert client.post("/writes/").status_code == 200
    assert client.post("/writes/").status_code == 429


def test_a_callable_rate_can_lift_the_limit() -> None:
    client = Client()
    assert client.get("/tiered/?who=a").status_code == 200
    assert client.get("/tiered/?who=a").status_code == 429
    assert client.get("/tiered/?who=a&vip=1").status_code == 200


def test_rates_parse_as_django_ratelimit_writes_them() -> None:
    assert parse_rate("5/s") == (5, 1)
    assert parse_rate("100/m") == (100, 60)
    assert parse_rate("3/10m") == (3, 600)
    assert parse_rate("1/d") == (1, 86400)
    assert parse_rate((7, 30)) == (7, 30.0)
    assert parse_rate(None) is None
    for bad in ("5", "5/x", "-1/m", "5/m/h"):
        with pytest.raises(ConfigurationError):
            parse_rate(bad)


def test_a_bad_key_or_rate_is_reported_when_the_view_is_decorated() -> None:
    with pytest.raises(ConfigurationError):
        ratelimit(key="nonsense", rate="1/m")
    with pytest.raises(ConfigurationError):
        ratelimit(key=None, rate="1/m")
    with pytest.raises(ConfigurationError):
        ratelimit(key="ip", rate="often")
