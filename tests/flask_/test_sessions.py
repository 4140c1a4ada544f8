"""Server-side Flask sessions: the data in Redis, a signed ID in the cookie, rotation on
login, log out everywhere, and concurrent requests that merge their changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_.app import Gate
from redkit.errors import InvalidInput
from redkit.flask import ANONYMOUS_PREFIX
from redkit.flask.extension import _state
from redkit.flask.sessions import RedkitSessionInterface

pytestmark = pytest.mark.cluster


def cookie_of(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("session")
    return cookie.value if cookie else None


def shown(client: FlaskClient) -> Any:
    """What ``GET /session`` shows: ``{"data": ..., "user": ...}``."""
    body = client.get("/session").json
    assert body is not None
    return body


def token_of(app: Flask, client: FlaskClient) -> str:
    """The session ID inside the signed cookie."""
    interface = app.session_interface
    assert isinstance(interface, RedkitSessionInterface)
    signer = interface._signer(app)
    assert signer is not None
    value = cookie_of(client)
    assert value is not None
    return signer.unsign(value).decode()


def test_the_data_lives_in_redis_and_the_cookie_holds_only_a_signed_id(app: Flask) -> None:
    client = app.test_client()
    client.post("/set", json={"theme": "dark", "count": 3})
    value = cookie_of(client)
    assert value is not None
    assert "dark" not in value
    session = _state(app).store().get(token_of(app, client))
    assert session is not None
    assert session.data == {"theme": "dark", "count": 3}
    assert session.user_id.startswith(ANONYMOUS_PREFIX)
    assert client.get("/session").json == {"data": {"theme": "dark", "count": 3}, "user": None}


def test_a_request_that_never_touches_the_session_sets_no_cookie_and_no_vary(
    app: Flask,
) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    response = client.get("/untouched")
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.vary


def test_a_read_only_request_writes_nothing_and_keeps_the_cookie(app: Flask) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    response = client.get("/session")
    assert response.json == {"data": {"a": 1}, "user": None}
    assert "Set-Cookie" not in response.headers
    assert "Cookie" in response.vary


def test_a_forged_cookie_is_refused_and_cleared(app: Flask) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    value = cookie_of(client)
    assert value is not None
    client.set_cookie("session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    response = client.get("/session")
    assert response.json == {"data": {}, "user": None}
    assert "session=;" in response.headers["Set-Cookie"]
    assert cookie_of(client) is None


def test_a_cookie_signed_with_another_key_is_refused(app: Flask, make_app: Any) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    other = make_app(SECRET_KEY="another-secret-key-of-enough-length")
    intruder = other.test_client()
    intruder.set_cookie("session", cookie_of(client) or "")
    assert intruder.get("/session").json == {"data": {}, "user": None}


def test_an_old_secret_key_in_fallbacks_still_verifies(app: Flask, make_app: Any) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    rotated = make_app(
        SECRET_KEY="the-new-secret-key-of-enough-length", SECRET_KEY_FALLBACKS=[app.secret_key]
    )
    later = rotated.test_client()
    later.set_cookie("session", cookie_of(client) or "")
    assert later.get("/session").json == {"data": {"a": 1}, "user": None}


def test_login_changes_the_session_id_and_keeps_the_anonymous_data(app: Flask) -> None:
    client = app.test_client()
    client.post("/cart", json={"item": "book"})
    before = cookie_of(client)
    client.post("/login", json={"user": 42})
    after = cookie_of(client)
    assert after is not None
    assert after != before
    assert client.get("/session").json == {
        "data": {"cart": ["book"], "signed_in": True},
        "user": "42",
    }
    # The ID from before the sign-in (one an attacker could have planted) is dead.
    planted = app.test_client()
    planted.set_cookie("session", before or "")
    assert planted.get("/session").json == {"data": {}, "user": None}


def test_rotate_session_gives_a_new_id_and_the_old_one_stops_working(app: Flask) -> None:
    client = app.test_client()
    client.post("/login", json={"user": "alice"})
    before = cookie_of(client)
    client.post("/rotate")
    assert cookie_of(client) != before
    assert shown(client)["user"] == "alice"
    stale = app.test_client()
    stale.set_cookie("session", before or "")
    assert stale.get("/session").json == {"data": {}, "user": None}


def test_logout_ends_the_session_and_clears_the_cookie(app: Flask) -> None:
    client = app.test_client()
    client.post("/login", json={"user": "alice"})
    token = token_of(app, client)
    assert client.post("/logout").json == {"ended": True}
    assert cookie_of(client) is None
    assert _state(app).store().get(token) is None


def test_logout_everywhere_ends_every_session_of_the_user(app: Flask) -> None:
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    laptop.post("/login", json={"user": "alice"})
    phone.post("/login", json={"user": "alice"})
    other.post("/login", json={"user": "bob"})
    assert phone.post("/logout-everywhere").json == {"ended": 2}
    assert laptop.get("/session").json == {"data": {}, "user": None}
    assert shown(other)["user"] == "bob"


def test_logout_everywhere_without_a_user_is_a_typed_error(app: Flask) -> None:
    from redkit.errors import SessionNotFound

    with pytest.raises(SessionNotFound):
        app.test_client().post("/logout-everywhere")


def test_a_nested_change_is_written_without_marking_the_session_modified(app: Flask) -> None:
    client = app.test_client()
    client.post("/cart", json={"item": "book"})
    client.post("/cart", json={"item": "pen"})
    assert shown(client)["data"] == {"cart": ["book", "pen"]}


def test_removing_the_last_key_of_an_anonymous_session_ends_it(app: Flask) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    token = token_of(app, client)
    client.post("/remove/a")
    assert cookie_of(client) is None
    assert _state(app).store().get(token) is None


def test_a_value_that_is_not_json_is_refused_and_nothing_is_written(app: Flask) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    with pytest.raises(InvalidInput):
        client.post("/bad")
    assert shown(client)["data"] == {"a": 1}


def test_a_user_id_in_the_anonymous_range_is_refused(app: Flask) -> None:
    with pytest.raises(InvalidInput):
        app.test_client().post("/login", json={"user": ANONYMOUS_PREFIX + "x"})


@pytest.mark.parametrize(
    ("base_url", "secure"),
    [
        ("http://localhost", False),
        ("http://127.0.0.1:5000", False),
        ("http://example.com", True),
        ("https://localhost", True),
    ],
)
def test_the_cookie_is_secure_except_over_plain_http_to_a_loopback_host(
    app: Flask, base_url: str, secure: bool
) -> None:
    client = app.test_client()
    response = client.post("/set", json={"a": 1}, base_url=base_url)
    header = response.headers["Set-Cookie"]
    assert ("; Secure" in header) is secure
    assert "; HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Expires" not in header  # not permanent: a browser-session cookie


def test_secure_can_be_forced_off_for_plain_http_on_a_lan(make_app: Any) -> None:
    app = make_app(REDKIT_SESSION_COOKIE_SECURE=False)
    response = app.test_client().post("/set", json={"a": 1}, base_url="http://10.0.0.5")
    assert "Secure" not in response.headers["Set-Cookie"]


def test_a_permanent_session_cookie_lasts_until_the_absolute_deadline(app: Flask) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    response = client.post("/permanent")
    assert "Expires=" in response.headers["Set-Cookie"]
    cookie = client.get_cookie("session")
    assert cookie is not None
    session = _state(app).store().get(token_of(app, client))
    assert session is not None
    assert cookie.expires is not None
    assert abs(cookie.expires.timestamp() - session.absolute_expires_at) < 2


def _unreachable_app(make_app: Any) -> Flask:
    from redkit.embedded import find_free_port

    app: Flask = make_app(REDKIT_URL=f"redis://127.0.0.1:{find_free_port()}/0")
    app.config["TESTING"] = False  # errors become responses, as in production
    return app


def _assert_unavailable(response: Any) -> None:
    assert response.status_code == 503
    assert response.json["error"] == "unavailable"
    assert response.headers["Retry-After"] == "2"
    assert "session=" not in response.headers.get("Set-Cookie", "")


def test_a_session_read_while_redis_is_unreachable_is_a_json_503(app: Flask, make_app: Any) -> None:
    client = app.test_client()
    client.post("/set", json={"a": 1})
    down = _unreachable_app(make_app).test_client()
    down.set_cookie("session", cookie_of(client) or "")
    _assert_unavailable(down.get("/session"))


def test_a_session_write_while_redis_is_unreachable_is_a_json_503(make_app: Any) -> None:
    # The view succeeded, but its change cannot be kept: the client must not believe it was.
    _assert_unavailable(_unreachable_app(make_app).test_client().post("/set", json={"a": 1}))


def _cookie_header(response: httpx.Response) -> str:
    value = response.cookies.get("session")
    assert value
    return f"session={value}"


def _held_request(
    base: str, path: str, cookie: str, body: dict[str, Any], out: list[httpx.Response]
) -> threading.Thread:
    def run() -> None:
        out.append(httpx.post(base + path, json=body, headers={"Cookie": cookie}, timeout=20))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_concurrent_requests_that_change_different_keys_both_keep_their_change(
    app: Flask, serve: Callable[[Flask], str]
) -> None:
    base = serve(app)
    cookie = _cookie_header(httpx.post(base + "/login", json={"user": "alice"}))
    gate: Gate = app.extensions["test_gate"]
    out: list[httpx.Response] = []
    slow = _held_request(base, "/slow-set", cookie, {"a": "from the slow request"}, out)
    assert gate.read.wait(10)
    # While the slow request holds what it read, another one changes another key.
    fast = httpx.post(base + "/set", json={"b": "from the fast one"}, headers={"Cookie": cookie})
    assert fast.status_code == 204
    gate.go.set()
    slow.join(20)
    assert [r.status_code for r in out] == [204]
    data = httpx.get(base + "/session", headers={"Cookie": cookie}).json()["data"]
    assert data == {"signed_in": True, "a": "from the slow request", "b": "from the fast one"}


def test_a_request_that_read_before_logout_everywhere_does_not_bring_the_session_back(
    app: Flask, serve: Callable[[Flask], str]
) -> None:
    base = serve(app)
    cookie = _cookie_header(httpx.post(base + "/login", json={"user": "alice"}))
    other = _cookie_header(httpx.post(base + "/login", json={"user": "alice"}))
    gate: Gate = app.extensions["test_gate"]
    out: list[httpx.Response] = []
    slow = _held_request(base, "/slow-set", cookie, {"a": 1}, out)
    assert gate.read.wait(10)
    ended = httpx.post(base + "/logout-everywhere", headers={"Cookie": other})
    assert ended.json() == {"ended": 2}
    gate.go.set()
    slow.join(20)
    assert len(out) == 1
    assert "session=;" in out[0].headers["set-cookie"]
    after = httpx.get(base + "/session", headers={"Cookie": cookie}).json()
    assert after == {"data": {}, "user": None}


def test_a_test_can_prepare_the_session_with_session_transaction(app: Flask) -> None:
    client = app.test_client()
    with client.session_transaction() as session:
        session["theme"] = "dark"
    assert shown(client) == {"data": {"theme": "dark"}, "user": None}
    with client.session_transaction() as session:
        session["count"] = 1
    assert shown(client)["data"] == {"theme": "dark", "count": 1}
