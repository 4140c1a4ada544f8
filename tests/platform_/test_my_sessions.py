"""My sessions over HTTP through the gateway: ``GET /auth/sessions`` and
``DELETE /auth/sessions/{id-prefix}`` against a real ``redkit up``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from platform_.harness import Up, login, new_email, random_loopback, register
from redkit.sessions import MIN_PREFIX_LENGTH

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
def device() -> Iterator[tuple[httpx.Client, str]]:
    """A client of its own loopback address, and that address (the IP a session shows)."""
    address = random_loopback()
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=30) as client:
        yield client, address


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def sign_in_twice(up: Up, http: httpx.Client) -> tuple[str, str]:
    """Two sessions of one new user (say a laptop and a phone): their tokens."""
    email = new_email()
    assert register(up, http, email).status_code == 201
    laptop = http.post(
        f"{up.gateway}/auth/login",
        json={"email": email, "password": "correct horse battery"},
        headers={"user-agent": FIREFOX},
    )
    phone = http.post(
        f"{up.gateway}/auth/login",
        json={"email": email, "password": "correct horse battery"},
        headers={"user-agent": IPHONE},
    )
    return laptop.json()["token"], phone.json()["token"]


def prefix_of(up: Up, http: httpx.Client, token: str, device: str) -> str:
    listed = http.get(f"{up.gateway}/auth/sessions", headers=bearer(token)).json()["sessions"]
    return str(next(s["id_prefix"] for s in listed if s["device"] == device))


def test_my_sessions_show_device_ip_created_and_last_seen(
    up: Up, device: tuple[httpx.Client, str]
) -> None:
    client, address = device
    before = time.time()
    email = new_email()
    register(up, client, email)
    token = client.post(
        f"{up.gateway}/auth/login",
        json={"email": email, "password": "correct horse battery"},
        headers={"user-agent": FIREFOX},
    ).json()["token"]
    listed = client.get(f"{up.gateway}/auth/sessions", headers=bearer(token))
    assert listed.status_code == 200
    [session] = listed.json()["sessions"]
    assert session["device"] == "Firefox 120 on Linux"
    assert session["user_agent"] == FIREFOX
    assert session["ip"] == address  # the client's, not the gateway's loopback address
    assert session["current"] is True
    assert session["id_prefix"] == token[:8]
    # Server clock against ours: allow for skew and a loaded machine.
    assert abs(session["created_at"] - before) < 60
    assert session["created_at"] <= session["last_seen_at"] <= session["expires_at"]
    assert token not in listed.text


def test_ending_one_of_my_sessions_by_its_prefix_kills_it_in_every_service_at_once(
    up: Up, http: httpx.Client
) -> None:
    laptop, phone = sign_in_twice(up, http)
    # The phone has used both services (and anything a layer may keep for it).
    assert http.get(f"{up.gateway}/api/me", headers=bearer(phone)).status_code == 200
    assert http.get(f"{up.gateway}/api/projects", headers=bearer(phone)).status_code == 200
    prefix = prefix_of(up, http, laptop, "Mobile Safari 17 on iOS (iPhone)")

    ended = http.delete(f"{up.gateway}/auth/sessions/{prefix}", headers=bearer(laptop))

    assert ended.status_code == 200, ended.text
    body = ended.json()["ended"]
    assert (body["id_prefix"], body["current"]) == (prefix, False)
    for path in ("/api/me", "/api/projects", "/auth/sessions"):
        dead = http.get(f"{up.gateway}{path}", headers=bearer(phone))
        assert dead.status_code == 401, (path, dead.text)
        assert dead.headers["content-type"].startswith("application/json")
    assert http.get(f"{up.gateway}/api/me", headers=bearer(laptop)).status_code == 200
    listed = http.get(f"{up.gateway}/auth/sessions", headers=bearer(laptop)).json()["sessions"]
    assert [s["id_prefix"] for s in listed] == [laptop[:8]]
    again = http.delete(f"{up.gateway}/auth/sessions/{prefix}", headers=bearer(laptop))
    assert again.status_code == 404


def test_another_users_prefix_is_404_and_ends_nothing(up: Up, http: httpx.Client) -> None:
    victim, _ = sign_in_twice(up, http)
    attacker, _ = sign_in_twice(up, http)
    for prefix in (victim[:8], victim[:MIN_PREFIX_LENGTH]):
        refused = http.delete(f"{up.gateway}/auth/sessions/{prefix}", headers=bearer(attacker))
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"]
    assert http.get(f"{up.gateway}/api/me", headers=bearer(victim)).status_code == 200
    assert http.get(f"{up.gateway}/api/me", headers=bearer(attacker)).status_code == 200


def test_a_malformed_or_too_short_prefix_is_a_400_json_and_anonymous_is_401(
    up: Up, http: httpx.Client
) -> None:
    laptop, phone = sign_in_twice(up, http)
    for prefix in (laptop[: MIN_PREFIX_LENGTH - 1], laptop[:9], laptop, "ab%2Acd", "ab.cd"):
        refused = http.delete(f"{up.gateway}/auth/sessions/{prefix}", headers=bearer(phone))
        assert refused.status_code == 400, (prefix, refused.text)
        assert refused.headers["content-type"].startswith("application/json")
    anonymous = http.delete(f"{up.gateway}/auth/sessions/{laptop[:8]}")
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"]
    assert http.get(f"{up.gateway}/api/me", headers=bearer(laptop)).status_code == 200


def test_ending_the_current_session_by_cookie_clears_the_cookie(up: Up, http: httpx.Client) -> None:
    email = new_email()
    register(up, http, email)
    signed = login(up, http, email)
    cookie = {"cookie": f"session={signed.cookies['session']}"}
    token = signed.json()["token"]

    ended = http.delete(f"{up.gateway}/auth/sessions/{token[:8]}", headers=cookie)

    assert ended.status_code == 200, ended.text
    assert ended.json()["ended"]["current"] is True
    assert "session=;" in ended.headers["set-cookie"]
    assert "Max-Age=0" in ended.headers["set-cookie"]
    assert http.get(f"{up.gateway}/api/me", headers=cookie).status_code == 401
