"""``redkit up`` as a user runs it: a real subprocess, real servers, real HTTP, then SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis.exceptions as redis_errors
from redis.asyncio import Redis
from typer.testing import CliRunner

import redkit
from platform_.harness import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Up,
    admin_redis_url,
    alive,
    database_count,
    descendants,
    finished,
    log_of,
    login,
    new_email,
    port_open,
    register,
    signed_in,
    start_deployment,
    start_up,
    stop_up,
)
from redkit.cli import app
from redkit.platform.config import PlatformConfig
from redkit.platform.identity import Identity, sign_identity
from redkit.platform.mail import received
from redkit.platform.supervisor import LOOPBACK_HOSTS, UpOptions, allowed_hosts, check_options


def test_the_gateway_health_is_200_naming_every_part(up: Up) -> None:
    body = httpx.get(f"{up.gateway}/healthz", timeout=10).json()
    assert body["status"] == "ok"
    assert body["down"] == {}
    assert {"valkey", "postgres", "auth", "projects", "worker", "smtp"} <= set(body["parts"])


def test_every_service_is_its_own_process_on_its_own_port(up: Up) -> None:
    names = ["auth", "projects", "worker", "gateway"]
    pids = {up.part(n)["pid"] for n in names}
    assert len(pids) == len(names)
    for name in names:
        response = httpx.get(f"{up.part(name)['url']}/healthz", timeout=10)
        assert response.status_code == 200, name
    assert "redkit platform" in httpx.get(up.gateway, timeout=10).text


def test_the_url_table_is_printed_without_passwords(up: Up) -> None:
    printed = up.output.read_text()
    assert "gateway" in printed
    assert up.gateway in printed
    password = (up.data_dir / "valkey.password").read_text().strip()
    assert password not in printed
    assert (up.data_dir / "postgres.password").read_text().strip() not in printed


def test_a_hung_service_turns_the_health_503_naming_it_until_it_answers_again(up: Up) -> None:
    auth = up.part("auth")["pid"]
    os.kill(auth, signal.SIGSTOP)
    try:
        response = httpx.get(f"{up.gateway}/healthz", timeout=30)
        assert response.status_code == 503
        body = response.json()
        assert set(body["down"]) == {"auth"}
    finally:
        os.kill(auth, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while httpx.get(f"{up.gateway}/healthz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the platform did not recover"
        time.sleep(0.2)


def test_sigterm_stops_every_part_and_leaves_no_process_or_port(base: Path) -> None:
    up = start_up(base)
    try:
        processes = descendants(up.process.pid)
        ports = [urlsplit(p["url"]).port for p in up.state["parts"] if "://" in p["url"]]
        assert None not in ports
        # valkey, postgres (and its own children), auth, projects, worker, gateway
        assert len(processes) >= 6
    finally:
        code = stop_up(up)  # whatever failed above, the platform does not outlive the test
    assert code == 0
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in processes if alive(pid)] == []
    assert [port for port in ports if port and port_open(port)] == []
    assert not (up.data_dir / "up.json").exists()
    assert "stopped" in up.output.read_text()


def test_a_role_without_its_environment_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("REDIS_URL", "DATABASE_URL", "REDKIT_PLATFORM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["up", "--role", "auth", "--port", "0"])
    assert result.exit_code == 1
    assert "REDKIT_PLATFORM_SECRET" in result.output
    result = CliRunner().invoke(app, ["up", "--role", "nosuch"])
    assert result.exit_code == 2


def test_a_gateway_off_loopback_must_be_told_its_host_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDKIT_ALLOWED_HOSTS", raising=False)
    with pytest.raises(redkit.ConfigurationError, match="REDKIT_ALLOWED_HOSTS"):
        check_options(UpOptions(host="0.0.0.0"))
    assert allowed_hosts(UpOptions(host="127.0.0.1")) == LOOPBACK_HOSTS
    monkeypatch.setenv("REDKIT_ALLOWED_HOSTS", "platform.example.com, *.example.com")
    assert allowed_hosts(UpOptions(host="0.0.0.0")) == ("platform.example.com", "*.example.com")
    monkeypatch.setenv("REDKIT_ALLOWED_HOSTS", "*")
    assert allowed_hosts(UpOptions(host="0.0.0.0")) is None  # any Host, as asked


@pytest.mark.parametrize("value", ["example.com:8000", "https://example.com", "exa mple.com"])
def test_a_bad_allowed_host_fails_at_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("REDKIT_ALLOWED_HOSTS", f"ok.example.com,{value}")
    with pytest.raises(redkit.ConfigurationError, match="REDKIT_ALLOWED_HOSTS") as raised:
        check_options(UpOptions())
    assert repr(value) in str(raised.value)
    env = {
        "REDIS_URL": "redis://127.0.0.1:1",
        "DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "REDKIT_PLATFORM_SECRET": "s" * 32,
        "REDKIT_ALLOWED_HOSTS": value,
    }
    with pytest.raises(redkit.ConfigurationError, match="REDKIT_ALLOWED_HOSTS"):
        PlatformConfig.from_env(env)


# -- auth through the gateway ---------------------------------------------------------------


async def test_register_queues_a_welcome_email_that_reaches_the_sink(
    up: Up, http: httpx.Client
) -> None:
    email = new_email()
    response = register(up, http, email)
    assert response.status_code == 201, response.text
    assert response.json()["email"] == email
    assert "password" not in response.text
    async with redkit.connect(admin_redis_url(up), namespace="platform") as rk:
        deadline = time.monotonic() + 30
        while True:
            mails = [m for m in await received(rk, count=100) if m["to"] == [email]]
            if mails:
                break
            assert time.monotonic() < deadline, "no welcome e-mail"
            await asyncio.sleep(0.2)
    assert "Welcome" in mails[0]["subject"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "x@example.com", "password": "short", "name": "A"}, 422),
        ({"email": "not-an-email", "password": "correct horse battery", "name": "A"}, 422),
        ({"email": "x@example.com", "password": 12345678901, "name": "A"}, 422),
        ({"email": "x@example.com", "password": "correct horse battery"}, 422),
        ({"email": "x@example.com", "password": "correct horse battery", "name": "A", "x": 1}, 422),
    ],
)
def test_a_bad_registration_is_a_4xx_json_and_writes_nothing(
    up: Up, http: httpx.Client, body: dict[str, Any], status: int
) -> None:
    response = http.post(f"{up.gateway}/auth/register", json=body, timeout=30)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    # Nothing was written: the address is still free.
    if isinstance(body.get("email"), str) and "@" in body["email"]:
        assert login(up, http, body["email"]).status_code == 401


def test_bad_json_and_huge_bodies_are_4xx_json(up: Up, http: httpx.Client) -> None:
    bad = http.post(
        f"{up.gateway}/auth/register",
        content=b"{not json",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert bad.status_code == 422
    assert bad.json()
    huge = http.post(f"{up.gateway}/auth/register", content=b"x" * (2 * 1024 * 1024), timeout=30)
    assert huge.status_code == 413
    assert "limited" in huge.json()["detail"]


def test_a_duplicate_registration_is_409(up: Up, http: httpx.Client) -> None:
    email = new_email()
    assert register(up, http, email).status_code == 201
    assert register(up, http, email.upper()).status_code == 409


def test_login_gives_a_token_and_a_cookie_and_both_reach_me(up: Up, http: httpx.Client) -> None:
    email = new_email()
    register(up, http, email)
    response = login(up, http, email)
    assert response.status_code == 200
    token = response.json()["token"]
    assert "session" in response.cookies
    by_bearer = http.get(
        f"{up.gateway}/api/me", headers={"authorization": f"Bearer {token}"}, timeout=30
    )
    assert by_bearer.status_code == 200
    assert by_bearer.json()["email"] == email
    cookie = f"session={response.cookies['session']}"
    by_cookie = http.get(f"{up.gateway}/api/me", headers={"cookie": cookie}, timeout=30)
    assert by_cookie.json()["email"] == email
    assert login(up, http, email, "wrong password!!").status_code == 401


def test_a_client_sent_identity_header_is_worth_nothing(up: Up, http: httpx.Client) -> None:
    forged = sign_identity(Identity("someone", "admin"), "x" * 48)
    response = http.get(f"{up.gateway}/api/me", headers={"x-redkit-identity": forged}, timeout=30)
    assert response.status_code == 401


def test_logout_all_ends_every_session_of_the_user_at_once(up: Up, http: httpx.Client) -> None:
    email = new_email()
    register(up, http, email)
    tokens = [login(up, http, email).json()["token"] for _ in range(3)]
    listed = http.get(
        f"{up.gateway}/auth/sessions", headers={"authorization": f"Bearer {tokens[0]}"}, timeout=30
    ).json()["sessions"]
    assert len(listed) == 3
    ended = http.post(
        f"{up.gateway}/auth/logout-all",
        headers={"authorization": f"Bearer {tokens[1]}"},
        timeout=30,
    )
    assert ended.json() == {"ended": 3}
    for token in tokens:
        me = http.get(
            f"{up.gateway}/api/me", headers={"authorization": f"Bearer {token}"}, timeout=30
        )
        assert me.status_code == 401


def test_login_attempts_are_limited_per_account(up: Up, http: httpx.Client) -> None:
    email = new_email()
    register(up, http, email)
    statuses = [login(up, http, email, f"wrong password {n}").status_code for n in range(7)]
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    limited = login(up, http, email)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


def test_a_service_down_is_a_json_503_and_the_gateway_recovers(up: Up, http: httpx.Client) -> None:
    auth = up.part("auth")
    os.kill(auth["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 90
    response = http.get(f"{up.gateway}/api/me", timeout=30)
    assert response.status_code in (502, 503)
    assert response.json()["service"] == "auth"
    # The supervisor starts it again (same port). Poll /healthz: it is not rate limited.
    while http.get(f"{up.gateway}/healthz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, f"auth did not come back:\n{log_of(up, 'auth')}"
        time.sleep(0.3)
    assert http.get(f"{up.gateway}/api/me", timeout=30).status_code == 401


def test_a_service_killed_mid_request_is_a_json_502_and_the_system_recovers(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    projects = up.part("projects")
    # Stopped first, so the request is surely in flight (sent, unanswered) when it dies.
    os.kill(projects["pid"], signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                lambda: http.get(f"{up.gateway}/api/projects", headers=owner, timeout=60)
            )
            time.sleep(1.0)
            assert not pending.done()
            os.kill(projects["pid"], signal.SIGKILL)
            response = pending.result(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(projects["pid"], signal.SIGCONT)
    assert response.status_code in (502, 503), response.text
    assert response.json()["service"] == "projects"
    deadline = time.monotonic() + 90
    while http.get(f"{up.gateway}/healthz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, f"projects did not come back:\n{log_of(up, 'projects')}"
        time.sleep(0.3)
    again = http.get(f"{up.gateway}/api/projects", headers=owner, timeout=30)
    assert again.status_code == 200, again.text


def test_valkey_out_of_reach_mid_request_is_a_json_503_from_the_service_too(
    up: Up, http: httpx.Client
) -> None:
    # Reached directly (as a gateway on another machine would), with a valid signed identity:
    # the projects service's own Redis call (the role cache) finds the server silent.
    owner = signed_in(up, http)
    me = http.get(f"{up.gateway}/api/me", headers=owner).json()
    project = http.post(
        f"{up.gateway}/api/projects", json={"name": "o" + secrets.token_hex(4)}, headers=owner
    ).json()
    secret = (up.data_dir / "platform.secret").read_text().strip()
    identity = sign_identity(Identity(me["id"], "user"), secret)
    valkey = up.part("valkey")["pid"]
    os.kill(valkey, signal.SIGSTOP)
    try:
        response = http.get(
            f"{up.part('projects')['url']}/api/projects/{project['id']}",
            headers={"x-redkit-identity": identity},
            timeout=60,
        )
    finally:
        os.kill(valkey, signal.SIGCONT)
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert response.headers["retry-after"] == "2"


def test_one_users_login_never_lends_its_cookie_to_the_next_caller(
    up: Up, http: httpx.Client
) -> None:
    email = new_email()
    register(up, http, email)
    assert login(up, http, email).status_code == 200
    # The gateway's own HTTP client must not have kept the Set-Cookie of that login.
    assert http.get(f"{up.gateway}/api/me", timeout=30).status_code == 401


def test_the_eleventh_anonymous_request_in_a_minute_is_a_json_429(
    up: Up, http: httpx.Client
) -> None:
    answers = [http.get(f"{up.gateway}/api/me") for _ in range(11)]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    first = answers[0].headers
    assert first["x-ratelimit-limit"] == "10"
    assert first["x-ratelimit-remaining"] == "9"
    assert first["x-ratelimit-used"] == "1"
    assert "ratelimit-policy" in first
    assert "ratelimit" in first
    limited = answers[10]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"].startswith("application/json")
    assert limited.json()


def test_a_signed_in_user_gets_the_user_tier(up: Up, http: httpx.Client) -> None:
    email = new_email()
    register(up, http, email)
    token = login(up, http, email).json()["token"]
    me = http.get(f"{up.gateway}/api/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.headers["x-ratelimit-limit"] == "100"


def test_an_admin_changes_a_users_type_and_the_user_signs_in_again(
    up: Up, http: httpx.Client
) -> None:
    admin = login(up, http, ADMIN_EMAIL, ADMIN_PASSWORD).json()["token"]
    email = new_email()
    user_id = register(up, http, email).json()["id"]
    user = login(up, http, email).json()["token"]

    def patch(token: str, kind: object) -> httpx.Response:
        return http.patch(
            f"{up.gateway}/api/admin/users/{user_id}",
            json={"type": kind},
            headers={"authorization": f"Bearer {token}"},
        )

    assert patch(user, "admin").status_code == 403
    assert patch(admin, "emperor").status_code == 422
    changed = patch(admin, "premium")
    assert changed.status_code == 200
    assert changed.json()["type"] == "premium"
    # The old session (type "user") is gone; a new one is premium.
    me = http.get(f"{up.gateway}/api/me", headers={"authorization": f"Bearer {user}"})
    assert me.status_code == 401
    again = login(up, http, email).json()["token"]
    me = http.get(f"{up.gateway}/api/me", headers={"authorization": f"Bearer {again}"})
    assert me.json()["type"] == "premium"
    assert me.headers["x-ratelimit-limit"] == "1000"


# -- projects ------------------------------------------------------------------------------


def test_a_project_gets_its_own_database_and_valkey_user_shown_once(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    name = "p" + secrets.token_hex(4)
    created = http.post(f"{up.gateway}/api/projects", json={"name": name}, headers=owner)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["namespace"] == f"p-{name}"

    async def use_credentials() -> None:
        conn = await asyncpg.connect(body["database_url"])
        assert await conn.fetchval("SELECT current_database()") == f"p_{name}"
        await conn.close()
        client = Redis.from_url(body["redis_url"])
        try:
            assert await client.set(f"p-{name}:k", "v")
            with pytest.raises(redis_errors.NoPermissionError):
                await client.get("platform:anything")
            with pytest.raises(redis_errors.NoPermissionError):
                await client.execute_command("SCAN", "0")
        finally:
            await client.aclose()

    asyncio.run(use_credentials())
    listed = http.get(f"{up.gateway}/api/projects", headers=owner).json()["projects"]
    [mine] = [p for p in listed if p["name"] == name]
    assert "@" in mine["redis_url"]
    assert ":" not in mine["redis_url"].split("@")[0].removeprefix("redis://")
    assert ":" not in mine["database_url"].split("@")[0].removeprefix("postgresql://")
    # Another user neither lists nor reads it.
    stranger = signed_in(up, http)
    assert name not in str(http.get(f"{up.gateway}/api/projects", headers=stranger).json())
    assert http.get(f"{up.gateway}/api/projects/{body['id']}", headers=stranger).status_code == 404
    assert (
        http.delete(f"{up.gateway}/api/projects/{body['id']}", headers=stranger).status_code == 404
    )
    gone = http.delete(f"{up.gateway}/api/projects/{body['id']}", headers=owner)
    assert gone.status_code == 204
    assert database_count(up, f"p_{name}") == 0


def test_two_concurrent_creates_through_the_gateway_make_one_database(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    name = "c" + secrets.token_hex(4)

    def create() -> int:
        return http.post(
            f"{up.gateway}/api/projects", json={"name": name}, headers=owner
        ).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(lambda _: create(), range(2)))
    assert statuses == [201, 409]
    assert database_count(up, f"p_{name}") == 1


@pytest.mark.parametrize(
    "body",
    [{"name": "Bad Name"}, {"name": "ok-name", "steps": "rm -rf /"}, {"name": 5}, {}],
)
def test_a_bad_project_is_a_422_and_creates_nothing(
    up: Up, http: httpx.Client, body: dict[str, Any]
) -> None:
    owner = signed_in(up, http)
    response = http.post(f"{up.gateway}/api/projects", json=body, headers=owner)
    assert response.status_code == 422
    assert database_count(up, "p_ok_name") == 0


def test_projects_need_a_signed_in_caller(up: Up, http: httpx.Client) -> None:
    assert http.get(f"{up.gateway}/api/projects").status_code == 401
    direct = http.get(
        f"{up.part('projects')['url']}/api/projects",
        headers={"x-redkit-identity": sign_identity(Identity("u", "admin"), "x" * 48)},
    )
    assert direct.status_code == 401


def test_a_member_added_by_the_owner_sees_the_project_and_a_viewer_adds_no_one(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    project = http.post(
        f"{up.gateway}/api/projects", json={"name": "m" + secrets.token_hex(4)}, headers=owner
    ).json()
    viewer_email = new_email()
    register(up, http, viewer_email)
    viewer = {"authorization": f"Bearer {login(up, http, viewer_email).json()['token']}"}
    members = f"{up.gateway}/api/projects/{project['id']}/members"
    assert http.get(f"{up.gateway}/api/projects/{project['id']}", headers=viewer).status_code == 404
    added = http.post(members, json={"email": viewer_email, "role": "viewer"}, headers=owner)
    assert added.status_code == 201
    assert http.get(f"{up.gateway}/api/projects/{project['id']}", headers=viewer).status_code == 200
    roles = {m["email"]: m["role"] for m in http.get(members, headers=viewer).json()["members"]}
    assert roles[viewer_email] == "viewer"
    refused = http.post(members, json={"email": viewer_email, "role": "owner"}, headers=viewer)
    assert refused.status_code == 403
    assert (
        http.post(members, json={"email": "x@y.zz", "role": "king"}, headers=owner).status_code
        == 422
    )
    assert (
        http.delete(f"{up.gateway}/api/projects/{project['id']}", headers=viewer).status_code == 403
    )
    assert (
        http.delete(f"{up.gateway}/api/projects/{project['id']}", headers=owner).status_code == 204
    )


# -- deployments ---------------------------------------------------------------------------


def test_a_deployment_runs_its_steps_and_succeeds(up: Up, http: httpx.Client) -> None:
    owner = signed_in(up, http)
    deployment = start_deployment(
        up, http, owner, ["echo building $REDKIT_REF", 'test -z "$REDIS_URL" && echo clean']
    )
    shown = finished(up, http, owner, deployment)
    assert shown["status"] == "success"
    assert shown["attempts"] == 1
    assert "building main" in shown["log"]
    assert "clean" in shown["log"]  # the platform's secrets are not in a step's environment


def test_a_failing_step_fails_the_deployment_after_three_attempts(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    deployment = start_deployment(up, http, owner, ["echo trying", "exit 3"])
    shown = finished(up, http, owner, deployment)
    assert shown["status"] == "failed"
    assert shown["attempts"] == 3
    assert shown["log"].count("--- attempt") == 3
    assert "(exit 3)" in shown["log"]
