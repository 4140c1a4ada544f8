"""An attacker's pass over the gateway of a real ``redkit up``: forged identities, path and
header tricks, cookies against bearers, spoofed addresses, bodies of the wrong kind.

Some requests here are written byte by byte on a socket: an HTTP client library would
normalise what the attacker sends (dot segments, duplicate or odd headers)."""

from __future__ import annotations

import json
import secrets
import socket
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import pytest

from platform_.harness import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    Up,
    login,
    new_email,
    random_loopback,
    register,
    signed_in,
)
from redkit.platform.identity import Identity, sign_identity


def client_at(address: str) -> httpx.Client:
    """A client leaving from ``address`` that keeps no cookie (each request says its own)."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(
        transport=httpx.HTTPTransport(local_address=address), timeout=30, cookies=jar
    )


def raw_request(
    up: Up, lines: list[bytes], body: bytes = b"", *, hosts: list[bytes] | None = None
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """Send one HTTP/1.1 request exactly as given (plus Host, Connection: close and the
    body's length) from a loopback address of its own; (status, headers, body) back.
    ``hosts``: the Host lines to send instead of the gateway's own."""
    host = up.gateway.removeprefix("http://")
    address, port = host.rsplit(":", 1)
    host_lines = [b"Host: " + h for h in (hosts if hosts is not None else [host.encode()])]
    head = [*lines, *host_lines, b"Connection: close"]
    if body:
        head.append(b"Content-Length: " + str(len(body)).encode())
    with socket.socket() as sock:
        sock.bind((random_loopback(), 0))
        sock.settimeout(30)
        sock.connect((address, int(port)))
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        answer = b""
        while len(answer) < 1_000_000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        payload = dechunk(payload)
    return int(status_line.split()[1]), headers, payload


def dechunk(data: bytes) -> bytes:
    out = b""
    for _ in range(10_000):
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


@pytest.fixture(scope="module")
def admin_token(up: Up) -> str:
    with client_at(random_loopback()) as http:
        return str(login(up, http, ADMIN_EMAIL, ADMIN_PASSWORD).json()["token"])


def assert_json_4xx(status: int, headers: dict[bytes, list[bytes]], body: bytes) -> None:
    assert 400 <= status < 500, (status, body[:300])
    assert headers[b"content-type"][0].startswith(b"application/json"), headers
    assert json.loads(body)["detail"]


# -- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [b"X-Redkit-Identity", b"x-redkit-identity", b"X-REDKIT-IDENTITY", b"X_Redkit_Identity"]
)
def test_a_forged_identity_header_in_any_spelling_is_worth_nothing(up: Up, name: bytes) -> None:
    forged = sign_identity(Identity("someone", "admin"), "x" * 48).encode()
    for extra in ([], [b"Connection: keep-alive, " + name], [name + b": " + forged]):
        status, headers, body = raw_request(
            up, [b"GET /api/projects HTTP/1.1", name + b": " + forged, *extra]
        )
        assert status == 401, body
        assert_json_4xx(status, headers, body)


def test_naming_the_identity_header_in_connection_does_not_strip_the_gateways_own(
    up: Up, http: httpx.Client
) -> None:
    # A proxy that honoured Connection *after* adding its own headers would drop them.
    headers = signed_in(up, http)
    token = headers["authorization"].encode()
    status, _headers, body = raw_request(
        up,
        [
            b"GET /api/projects HTTP/1.1",
            b"Authorization: " + token,
            b"Connection: x-redkit-identity",
        ],
    )
    assert status == 200, body
    assert "projects" in json.loads(body)


# -- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        b"/api/../auth/sessions",
        b"/api/projects/../../auth/sessions",
        b"/api/%2e%2e/auth/sessions",
        b"/api/me%2F..%2F..%2Fauth%2Fsessions",
        b"/auth/./sessions",
    ],
)
def test_a_path_with_dot_segments_is_refused_not_resolved_by_someone_else(
    up: Up, http: httpx.Client, path: bytes
) -> None:
    token = signed_in(up, http)["authorization"].encode()
    status, headers, body = raw_request(
        up, [b"GET " + path + b" HTTP/1.1", b"Authorization: " + token]
    )
    assert status == 400, body
    assert_json_4xx(status, headers, body)


@pytest.mark.parametrize("path", ["/api/me/", "/api/projects/", "/auth/sessions/"])
def test_a_trailing_slash_is_a_json_404_never_a_redirect_to_a_service_address(
    up: Up, http: httpx.Client, path: str
) -> None:
    headers = signed_in(up, http)
    response = http.get(f"{up.gateway}{path}", headers=headers)
    assert response.status_code == 404, response.text
    assert "location" not in response.headers
    assert response.json()["detail"]


def test_an_encoded_question_mark_stays_in_the_path(up: Up, http: httpx.Client) -> None:
    # The service must see the path the gateway routed: %3F decoded and sent on as "?"
    # would start a query (the path goes on as sent, still encoded).
    headers = signed_in(up, http)
    response = http.get(f"{up.gateway}/api/projects/%3Fall=1", headers=headers)
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "no such project"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/projects/%00"),
        ("GET", "/api/projects/1%00/members"),
        ("DELETE", "/api/projects/%00"),
        ("POST", "/api/projects/%00/deployments"),
        ("GET", "/api/deployments/%00"),
        ("PATCH", "/api/admin/users/%00"),
    ],
)
def test_a_nul_in_a_path_id_is_a_json_404_not_a_500(
    up: Up, http: httpx.Client, admin_token: str, method: str, path: str
) -> None:
    # PostgreSQL text holds no NUL: the lookup itself used to fail.
    token = admin_token
    body = {"type": "user"} if method == "PATCH" else {}
    response = http.request(
        method, f"{up.gateway}{path}", json=body, headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 404, response.text
    assert response.json()["detail"].startswith("no such")


def test_a_nul_in_a_member_id_of_a_real_project_is_a_json_404_not_a_500(
    up: Up, http: httpx.Client, admin_token: str
) -> None:
    headers = {"authorization": f"Bearer {admin_token}"}
    project = http.post(
        f"{up.gateway}/api/projects", json={"name": "n" + secrets.token_hex(4)}, headers=headers
    )
    assert project.status_code == 201, project.text
    response = http.delete(
        f"{up.gateway}/api/projects/{project.json()['id']}/members/%00", headers=headers
    )
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "no such member"


# -- bodies -----------------------------------------------------------------------------------


def test_a_nul_in_text_to_be_stored_is_a_422_and_writes_nothing(up: Up, http: httpx.Client) -> None:
    email = new_email()
    nul = email.replace("@", "\x00@")
    refused = http.post(
        f"{up.gateway}/auth/register", json={"email": nul, "password": PASSWORD, "name": "A\x00"}
    )
    assert refused.status_code == 422, refused.text
    assert {e["loc"][-1] for e in refused.json()["detail"]} == {"email", "name"}
    assert (
        http.post(f"{up.gateway}/auth/login", json={"email": nul, "password": PASSWORD}).status_code
        == 422
    )
    headers = signed_in(up, http)
    name = "n" + secrets.token_hex(4)
    for path, body in [
        ("/api/projects", {"name": name, "steps": ["echo \x00"]}),
        ("/api/projects", {"name": "a\x00b"}),
    ]:
        response = http.post(f"{up.gateway}{path}", json=body, headers=headers)
        assert response.status_code == 422, response.text
    listed = http.get(f"{up.gateway}/api/projects", headers=headers).json()["projects"]
    assert [p for p in listed if p["name"] == name] == []


def test_a_lone_surrogate_in_json_is_a_422_json_not_a_500(up: Up, http: httpx.Client) -> None:
    # Valid JSON ("\ud800" is an escape), refused by pydantic; FastAPI's own 422 echoed it
    # and could not encode it: a 500.
    raw = (
        b'{"email": "a\\ud800@example.com", "password": "correct horse battery", "name": "\\udfff"}'
    )
    response = http.post(
        f"{up.gateway}/auth/register", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert {e["loc"][-1] for e in response.json()["detail"]} == {"email", "name"}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/json", b"[" * 100_000 + b"]" * 100_000),
        (b"application/json", b'{"email":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}"),
        (b"application/json", b'{"email": "\xff\xfe", "password": "x"}'),
        (
            b"application/json; charset=latin-1",
            '{"email": "\xe9@a.bc", "password": "x"}'.encode("latin-1"),
        ),
        (b"text/plain", b'{"email": "a@b.cd", "password": "x"}'),
        (b"application/x-www-form-urlencoded", b"email=a%40b.cd&password=x"),
        (b"application/json", b'{"email": 1' + b"0" * 5000 + b', "password": "x"}'),
    ],
)
def test_bodies_of_the_wrong_kind_or_depth_are_a_json_4xx(
    up: Up, content_type: bytes, body: bytes
) -> None:
    status, headers, payload = raw_request(
        up, [b"POST /auth/login HTTP/1.1", b"Content-Type: " + content_type], body
    )
    assert_json_4xx(status, headers, payload)


# -- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent", ["café".encode("latin-1"), "café ☃".encode(), b"\x80\xff", b"a" * 8000]
)
def test_header_values_of_any_bytes_reach_the_service_as_sent(up: Up, agent: bytes) -> None:
    email = new_email()
    with client_at(random_loopback()) as http:
        register(up, http, email)
        token = login(up, http, email).json()["token"].encode()
    status, _headers, body = raw_request(
        up,
        [
            b"GET /auth/sessions HTTP/1.1",
            b"Authorization: Bearer " + token,
            b"User-Agent: " + agent,
        ],
    )
    assert status == 200, body
    assert json.loads(body)["sessions"]


def test_a_spoofed_client_address_neither_lifts_the_anonymous_limit_nor_shows_in_sessions(
    up: Up,
) -> None:
    address = random_loopback()
    with client_at(address) as http:
        email = new_email()
        register(up, http, email)
        spoofed = {"x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.9",
                   "forwarded": "for=203.0.113.9"}  # fmt: skip
        token = http.post(
            f"{up.gateway}/auth/login",
            json={"email": email, "password": PASSWORD},
            headers=spoofed,
        ).json()["token"]
        [session] = http.get(
            f"{up.gateway}/auth/sessions", headers={"authorization": f"Bearer {token}"}
        ).json()["sessions"]
        assert session["ip"] == address
        statuses = []
        for n in range(12):
            who = dict.fromkeys(spoofed, f"198.51.100.{n}")
            statuses.append(http.get(f"{up.gateway}/api/me", headers=who).status_code)
    # 2 anonymous requests above, so the 9th here is the 11th of the minute.
    assert statuses[:8] == [401] * 8
    assert statuses[8:] == [429] * 4


# -- cookies and bearers ----------------------------------------------------------------------


def test_a_stale_cookie_never_clears_the_cookie_a_login_just_set(
    up: Up, http: httpx.Client
) -> None:
    # The gateway clears a cookie that names no live session; the auth service sets a new
    # one on login. Both in one answer: the clearing came last and signed the user out.
    email = new_email()
    register(up, http, email)
    signed = http.post(
        f"{up.gateway}/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"cookie": "session=expired.long-ago"},
    )
    assert signed.status_code == 200, signed.text
    cookies = signed.headers.get_list("set-cookie")
    assert len(cookies) == 1, cookies
    value = cookies[0].split(";")[0].removeprefix("session=")
    assert value
    me = http.get(f"{up.gateway}/api/me", headers={"cookie": f"session={value}"})
    assert me.status_code == 200, me.text


def test_a_planted_cookie_is_ended_by_the_login_it_rides_on(up: Up, http: httpx.Client) -> None:
    attacker = new_email()
    register(up, http, attacker)
    planted = login(up, http, attacker).cookies["session"]
    victim = new_email()
    register(up, http, victim)
    signed = http.post(
        f"{up.gateway}/auth/login",
        json={"email": victim, "password": PASSWORD},
        headers={"cookie": f"session={planted}"},
    )
    fresh = signed.cookies["session"]
    assert fresh != planted
    assert (
        http.get(f"{up.gateway}/api/me", headers={"cookie": f"session={planted}"}).status_code
        == 401
    )
    me = http.get(f"{up.gateway}/api/me", headers={"cookie": f"session={fresh}"})
    assert me.json()["email"] == victim


def test_bearer_and_cookie_of_two_users_the_bearer_decides_in_every_service(
    up: Up, http: httpx.Client
) -> None:
    alice = new_email()
    register(up, http, alice)
    alice_token = login(up, http, alice).json()["token"]
    bob = new_email()
    register(up, http, bob)
    bob_cookie = login(up, http, bob).cookies["session"]
    both = {"authorization": f"Bearer {alice_token}", "cookie": f"session={bob_cookie}"}
    name = "b" + secrets.token_hex(4)
    created = http.post(f"{up.gateway}/api/projects", json={"name": name}, headers=both)
    assert created.status_code == 201, created.text
    assert http.get(f"{up.gateway}/api/me", headers=both).json()["email"] == alice
    listed = http.get(
        f"{up.gateway}/api/projects", headers={"authorization": f"Bearer {alice_token}"}
    ).json()["projects"]
    assert name in [p["name"] for p in listed]


# -- Host: only the gateway's own names -----------------------------------------------------


def test_a_host_that_is_none_of_the_gateways_names_is_a_json_400_before_anything_runs(
    up: Up,
) -> None:
    port = up.gateway.rsplit(":", 1)[1].encode()
    for path in (b"/api/me", b"/", b"/api/users/1", b"/events", b"/metrics"):
        for host in (b"evil.example", b"evil.example:" + port, b"127.0.0.1.evil.example"):
            status, headers, body = raw_request(up, [b"GET " + path + b" HTTP/1.1"], hosts=[host])
            assert (path, host, status) == (path, host, 400)
            assert headers[b"content-type"] == [b"application/json"]
            assert "unknown host" in json.loads(body)["detail"]
            assert b"x-cache" not in headers  # refused before the cache made an entry
    body = json.dumps({"email": new_email(), "password": PASSWORD}).encode()
    status, _, _ = raw_request(
        up,
        [b"POST /auth/register HTTP/1.1", b"Content-Type: application/json"],
        body,
        hosts=[b"evil.example"],
    )
    assert status == 400
    # Two Host lines, or none, are refused too: which one would the cache have keyed on?
    own = up.gateway.removeprefix("http://").encode()
    assert raw_request(up, [b"GET /api/me HTTP/1.1"], hosts=[own, b"evil.example"])[0] == 400
    assert raw_request(up, [b"GET /api/me HTTP/1.0"], hosts=[])[0] == 400


def test_this_machines_names_are_answered_and_the_probes_answer_any_host(up: Up) -> None:
    port = up.gateway.rsplit(":", 1)[1].encode()
    for host in (b"127.0.0.1:" + port, b"localhost:" + port, b"LOCALHOST", b"app.localhost"):
        status, _, _ = raw_request(up, [b"GET /api/me HTTP/1.1"], hosts=[host])
        assert (host, status) == (host, 401)  # reached the service: not signed in
    status, _, body = raw_request(up, [b"GET /healthz HTTP/1.1"], hosts=[b"10.1.2.3:8000"])
    assert status == 200, body


def test_a_websocket_handshake_with_another_host_is_refused_before_accept(up: Up) -> None:
    lines = [
        b"GET /ws HTTP/1.1",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ]
    status, _, body = raw_request(up, lines, hosts=[b"evil.example"])
    assert status == 400, body
