"""``redkit.django.tiers``: rate limits by tier on every request of a Django project (anonymous
by IP, signed-in users by ID, higher tiers by TIER_OF), through the test client, the async
test client and a real ASGI server (uvicorn), on the suite's real servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.test import AsyncClient, Client
from django.test.utils import override_settings

from django_.auth import PREMIUM_ID, STAFF_ID
from redkit.django.ratelimit import _limiters
from redkit.embedded import find_free_port
from redkit.errors import ConfigurationError
from uvicorn_server import serve_in_loop

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("limits")]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "redkit.django.tiers.TieredRateLimitMiddleware",
]
TIERS = {
    "anonymous": ["3/m"],
    "user": ["4/m"],
    "premium": [(6, 60)],
    "admin": ["8/m", "100/h"],
}

Tiered = Callable[..., AbstractContextManager[None]]


@pytest.fixture
def tiered(sessions: None) -> Tiered:
    """The tier middleware in MIDDLEWARE with these REDKIT_RATELIMIT_TIERS (a client made
    inside the block loads it)."""

    @contextmanager
    def use(middleware: list[str] = MIDDLEWARE, **config: Any) -> Iterator[None]:
        with override_settings(
            MIDDLEWARE=middleware,
            REDKIT_RATELIMIT_TIERS={"TIERS": TIERS, "EXEMPT": ["/tiers/health/"], **config},
        ):
            yield

    return use


def sign_in(client: Client, user_id: int) -> None:
    assert client.get(f"/tiers/login/{user_id}/").status_code == 200


def test_anonymous_callers_are_limited_by_ip_with_a_json_429_and_the_standard_headers(
    tiered: Tiered,
) -> None:
    with tiered():
        client = Client(REMOTE_ADDR="10.1.0.1")
        for remaining in (2, 1, 0):
            allowed = client.get("/tiers/whoami/")
            assert allowed.status_code == 200
            assert allowed.headers["RateLimit-Policy"] == '"anonymous";q=3;w=60'
            assert f'"anonymous";r={remaining};' in allowed.headers["RateLimit"]
        refused = client.get("/tiers/whoami/")
        assert refused.status_code == 429
        assert refused.headers["Content-Type"] == "application/json"
        body = refused.json()
        assert body["error"] == "rate_limited"
        assert body["policy"] == "anonymous"
        # A sliding window frees room as the previous window fades: up to two windows away.
        assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert '"anonymous";r=0;' in refused.headers["RateLimit"]
        assert Client(REMOTE_ADDR="10.1.0.2").get("/tiers/whoami/").status_code == 200


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(tiered: Tiered) -> None:
    with tiered():
        client = Client(REMOTE_ADDR="10.2.0.1")
        codes = [
            client.get("/tiers/whoami/", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 200, 429]
    with tiered(TRUSTED_PROXIES=["10.9.0.0/16"]):
        proxy = Client(REMOTE_ADDR="10.9.0.1")
        for i in range(4):  # each forwarded client has its own bucket behind the proxy
            forwarded = proxy.get("/tiers/whoami/", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")
            assert forwarded.status_code == 200
        # A client that is not the proxy cannot choose its key by writing the header.
        direct = Client(REMOTE_ADDR="10.2.0.1")
        assert direct.get("/tiers/whoami/", HTTP_X_FORWARDED_FOR="203.0.113.1").status_code == 429


def test_a_signed_in_user_is_limited_by_user_id_in_the_user_tier_from_any_address(
    tiered: Tiered,
) -> None:
    with tiered():
        client = Client(REMOTE_ADDR="10.3.0.1")
        sign_in(client, 42)  # one anonymous request
        codes = []
        for i in range(5):
            response = client.get("/tiers/whoami/", REMOTE_ADDR=f"10.3.1.{i}")
            codes.append(response.status_code)
            if response.status_code == 200:
                assert response.json() == {"user": 42}
                assert response.headers["RateLimit-Policy"] == '"user";q=4;w=60'
        assert codes == [200, 200, 200, 200, 429]
        other = Client(REMOTE_ADDR="10.3.0.1")
        sign_in(other, 43)
        assert other.get("/tiers/whoami/").status_code == 200


def test_staff_users_get_the_admin_tier_and_tier_of_can_name_a_higher_one(
    tiered: Tiered,
) -> None:
    with tiered(TIER_OF="django_.auth.tier_of"):
        staff = Client(REMOTE_ADDR="10.4.0.1")
        sign_in(staff, STAFF_ID)
        response = staff.get("/tiers/whoami/")
        # A tier of two limits: both are checked, both in the headers.
        assert response.headers["RateLimit-Policy"] == (
            '"admin:8/60s";q=8;w=60, "admin:100/3600s";q=100;w=3600'
        )
        premium = Client(REMOTE_ADDR="10.4.0.2")
        sign_in(premium, PREMIUM_ID)
        codes = [premium.get("/tiers/whoami/").status_code for _ in range(7)]
        assert codes == [200] * 6 + [429]
        assert premium.get("/tiers/whoami/").json()["policy"] == "premium"


def test_identify_replaces_the_user_and_an_over_long_attacker_key_is_a_400(
    tiered: Tiered,
) -> None:
    with tiered(IDENTIFY="django_.auth.by_api_key"):
        client = Client(REMOTE_ADDR="10.5.0.1")
        response = client.get("/tiers/whoami/", HTTP_X_API_KEY="k-1")
        assert response.headers["RateLimit-Policy"] == '"premium";q=6;w=60'
        too_long = client.get("/tiers/whoami/", HTTP_X_API_KEY="k" * 600)
        assert too_long.status_code == 400
        assert too_long.json()["error"] == "invalid_request"
        assert client.get("/tiers/whoami/").headers["RateLimit-Policy"] == ('"anonymous";q=3;w=60')


def test_exempt_paths_are_never_limited(tiered: Tiered) -> None:
    with tiered():
        client = Client(REMOTE_ADDR="10.6.0.1")
        for _ in range(5):
            response = client.get("/tiers/health/")
            assert response.status_code == 200
            assert "RateLimit" not in response.headers
        # Whole segments only, and no dot segment walks out of an exempt path (both found
        # by an attack pass: a string prefix exempted "/tiers/health-admin" too).
        for path in ("/tiers/healthx/", "/tiers/health-admin", "/tiers/health/../whoami/"):
            assert "RateLimit" in client.get(path).headers, path


def test_a_views_own_ratelimit_gets_the_same_429_and_the_headers_of_the_tighter_limit(
    tiered: Tiered,
) -> None:
    with tiered(TIERS={"anonymous": ["50/m"], "user": ["50/m"]}):
        client = Client(REMOTE_ADDR="10.7.0.1")
        first = client.get("/limited/")  # @ratelimit(key="ip", rate="2/m")
        assert first.status_code == 200
        # The view's 2/m binds more than the tier's 50/m: one set of headers, for it.
        assert ";r=1;" in first.headers["RateLimit"]
        assert '"anonymous"' not in first.headers["RateLimit"]
        assert client.get("/limited/").status_code == 200
        third = client.get("/limited/")
        assert third.status_code == 429
        assert third.json()["error"] == "rate_limited"
        assert "Retry-After" in third.headers


async def test_async_requests_are_checked_on_the_async_client_in_the_event_loop(
    tiered: Tiered,
) -> None:
    with tiered(TIER_OF="django_.auth.atier_of"):
        # Both clients are 127.0.0.1 (the async test client's scope); one signs in.
        premium = AsyncClient()
        assert (await premium.get(f"/tiers/login/{PREMIUM_ID}/")).status_code == 200
        response = await premium.get("/tiers/awhoami/")
        assert response.json() == {"user": PREMIUM_ID}
        assert response.headers["RateLimit-Policy"] == '"premium";q=6;w=60'
        anonymous = AsyncClient()
        codes = [(await anonymous.get("/tiers/awhoami/")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert asyncio.get_running_loop() in _limiters._async
    await _limiters.aclose()


async def test_a_real_asgi_server_limits_by_tier_over_http(tiered: Tiered) -> None:
    with tiered():
        app = get_asgi_application()
        async with (
            serve_in_loop(app, lifespan="off") as url,
            httpx.AsyncClient(base_url=url) as user,
            httpx.AsyncClient(base_url=url) as anonymous,
        ):
            # Signed in (the session cookie), the caller is the user, not the address.
            assert (await user.get("/tiers/login/42/")).status_code == 200
            signed_in = await user.get("/tiers/awhoami/")
            assert signed_in.json() == {"user": 42}
            assert signed_in.headers["ratelimit-policy"] == '"user";q=4;w=60'
            # The same address without the session: the anonymous tier, by IP.
            codes = [(await anonymous.get("/tiers/awhoami/")).status_code for _ in range(3)]
            assert codes == [200, 200, 429]
            refused = await anonymous.get("/tiers/whoami/")  # a sync view, same bucket
            assert refused.status_code == 429
            assert refused.json()["error"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
            assert (await user.get("/tiers/whoami/")).status_code == 200
            # The check ran on the async client of this loop, not in a thread.
            assert asyncio.get_running_loop() in _limiters._async
    await _limiters.aclose()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"NONSENSE": 1}, "does not know"),
        ({"TIERS": {}}, "must map"),
        ({"TIERS": {"user": ["1/m"]}}, "no 'anonymous' tier"),
        ({"TIERS": {"anonymous": ["often"], "user": ["1/m"]}}, "rate"),
        ({"TIERS": {"anonymous": [], "user": ["1/m"]}}, "no limits"),
        ({"TIERS": {"anonymous": [(0, 60)], "user": ["1/m"]}}, "out of range"),
        ({"TRUSTED_PROXIES": ["not-an-address"]}, "trusted proxy"),
        ({"ALGORITHM": "leaky"}, "ALGORITHM"),
        ({"FAIL": "maybe"}, "FAIL"),
        ({"EXEMPT": "/healthz"}, "EXEMPT"),
        ({"TIER_OF": 5}, "TIER_OF"),
    ],
)
def test_bad_settings_are_reported_when_django_loads_the_middleware(
    tiered: Tiered, config: dict[str, Any], message: str
) -> None:
    with tiered(**config), pytest.raises(ConfigurationError, match=message):
        Client().get("/tiers/whoami/")


def test_the_middleware_before_authentication_is_refused_at_start_up(tiered: Tiered) -> None:
    with (
        tiered(middleware=[MIDDLEWARE[0], MIDDLEWARE[2], MIDDLEWARE[1]]),
        pytest.raises(ConfigurationError, match="after AuthenticationMiddleware"),
    ):
        Client().get("/tiers/whoami/")


@pytest.mark.parametrize(("fail", "status"), [("open", 200), ("closed", 429), ("raise", 503)])
async def test_an_unreachable_server_is_answered_by_the_fail_policy_on_both_paths(
    tiered: Tiered, fail: str, status: int
) -> None:
    nobody = f"redis://127.0.0.1:{find_free_port()}/0"
    with override_settings(REDKIT_RATELIMIT={"LOCATION": nobody}), tiered(FAIL=fail):
        sync = await sync_to_async(Client().get)("/tiers/whoami/")
        asynchronous = await AsyncClient().get("/tiers/awhoami/")
    for response in (sync, asynchronous):
        assert response.status_code == status
        if status != 200:
            assert response.json()["error"] in ("rate_limited", "unavailable")
            assert int(response.headers["Retry-After"]) >= 1
