"""The dashboard, its Platform view, /metrics and /api/admin/mail on the gateway of a real
``redkit up``, over HTTP (and once in a real browser)."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashboard.test_browser import ARTIFACTS, browser  # noqa: F401 (the browser fixture)
from platform_.harness import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    Up,
    login,
    new_email,
    register,
    signed_in,
    start_up,
    stop_up,
)
from redkit.sessions.store import SessionStore

METRICS_TOKEN = secrets.token_urlsafe(32)
HTML = {"accept": "text/html,application/xhtml+xml"}
CSRF = "redkit_dashboard_csrf"


def own_address() -> str:
    return f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    """This module's platform, with a scraper's token for /metrics."""
    path = Path(tempfile.mkdtemp(prefix="redkit-up-"))
    path.chmod(0o755)
    started = start_up(path, {"REDKIT_METRICS_TOKEN": METRICS_TOKEN})
    yield started
    stop_up(started)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(up: Up) -> Iterator[httpx.Client]:
    """A client signed in as the platform's first admin (bearer; one login per module: logins
    are limited per account)."""
    transport = httpx.HTTPTransport(local_address=own_address())
    with httpx.Client(transport=transport, timeout=30, base_url=up.gateway) as client:
        answer = client.post("/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert answer.status_code == 200, answer.text
        client.headers["authorization"] = f"Bearer {answer.json()['token']}"
        client.cookies.clear()  # the bearer token alone says who this is
        yield client


def csrf_token(client: httpx.Client) -> str:
    page = client.get("/platform", headers=HTML)
    assert page.status_code == 200, page.text
    token = page.cookies.get(CSRF) or client.cookies.get(CSRF)
    assert token
    return str(token)


def act(client: httpx.Client, name: str, body: dict[str, Any]) -> httpx.Response:
    token = csrf_token(client)  # the page set it in the client's jar too (double submit)
    return client.post(f"/actions/{name}", json=body, headers={"x-csrf-token": token})


def wait_for(check: Any, what: str, limit: float = 60) -> Any:
    deadline = time.monotonic() + limit
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {limit:g} s"
        time.sleep(0.3)


# -- who gets in -----------------------------------------------------------------------------


def test_an_anonymous_browser_gets_the_sign_in_page_with_a_post_form(
    up: Up, http: httpx.Client
) -> None:
    page = http.get(f"{up.gateway}/", headers=HTML)
    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert '<form id="signin"' in page.text
    assert 'method="post"' in page.text
    assert 'type="password"' in page.text
    assert "redkit platform" in page.text
    assert "Platform</a>" not in page.text  # no dashboard navigation, no data
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    script = http.get(f"{up.gateway}/signin.js")
    assert script.status_code == 200
    assert '"/auth/login"' in script.text
    assert "application/json" in script.text
    for path in ("/platform", "/jobs", "/audit"):
        assert http.get(f"{up.gateway}{path}", headers=HTML).status_code == 401, path
    plain = http.get(f"{up.gateway}/")  # curl's Accept: */* gets the page too
    assert plain.status_code == 401
    assert '<form id="signin"' in plain.text


def test_an_anonymous_api_client_gets_json_401_and_no_dashboard_action(
    up: Up, http: httpx.Client
) -> None:
    answer = http.get(f"{up.gateway}/platform", headers={"accept": "application/json"})
    assert answer.status_code == 401
    assert answer.json()["detail"].startswith("sign in first")
    acted = http.post(f"{up.gateway}/actions/platform.revoke_all", json={"user": "x"})
    assert acted.status_code == 401
    assert acted.headers["content-type"] == "application/json"


def test_a_signed_in_user_who_is_not_an_admin_gets_a_403_page_saying_why(
    up: Up, http: httpx.Client
) -> None:
    email = new_email()
    assert register(up, http, email).status_code == 201
    headers = {"authorization": f"Bearer {login(up, http, email).json()['token']}"}
    page = http.get(f"{up.gateway}/", headers={**HTML, **headers})
    assert page.status_code == 403
    assert email in page.text
    assert "administrators only" in page.text
    assert 'id="signout"' in page.text
    platform = http.get(f"{up.gateway}/platform", headers={**headers, "accept": "application/json"})
    assert platform.status_code == 403
    assert platform.json() == {"error": "not allowed: no dashboard access"}
    acted = http.post(
        f"{up.gateway}/actions/platform.revoke_all",
        json={"user": "x"},
        headers={**headers, "x-csrf-token": "t", "cookie": f"{CSRF}=t"},
    )
    assert acted.status_code == 403


def test_healthz_and_the_api_keep_their_own_routes_beside_the_dashboard(
    up: Up, http: httpx.Client
) -> None:
    health = http.get(f"{up.gateway}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    headers = signed_in(up, http)
    me = http.get(f"{up.gateway}/api/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["type"] == "user"
    assert http.get(f"{up.gateway}/auth/sessions", headers=headers).status_code == 200
    # A path the dashboard does not own still goes to the proxy (JSON 404, not a page).
    missing = http.get(f"{up.gateway}/nowhere", headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no such path"}


# -- what an admin sees ----------------------------------------------------------------------


def test_an_admin_gets_the_dashboard_with_a_platform_view(up: Up, admin: httpx.Client) -> None:
    page = admin.get("/", headers=HTML)
    assert page.status_code == 200, page.text
    assert 'href="/platform"' in page.text
    assert "Overview" in page.text
    assert ADMIN_EMAIL in page.text  # the viewer's name, from the session
    platform = admin.get("/platform", headers=HTML)
    assert platform.status_code == 200
    assert 'aria-current="page">Platform' in platform.text
    assert ADMIN_EMAIL in platform.text
    assert admin.get("/static/dashboard.css").status_code == 200


def test_the_platform_view_shows_users_projects_deployments_and_mail(
    up: Up, http: httpx.Client, admin: httpx.Client
) -> None:
    email = new_email()
    assert register(up, http, email).status_code == 201
    token = login(up, http, email).json()["token"]
    headers = {"authorization": f"Bearer {token}"}
    name = "v" + secrets.token_hex(4)
    project = http.post(
        f"{up.gateway}/api/projects", json={"name": name, "steps": ["echo hello-deploy"]},
        headers=headers,
    )  # fmt: skip
    assert project.status_code == 201, project.text
    deployment = http.post(
        f"{up.gateway}/api/projects/{project.json()['id']}/deployments", json={}, headers=headers
    ).json()["id"]

    def shown() -> str | None:
        text = admin.get("/platform", headers=HTML).text
        done = "hello-deploy" in text and "Welcome to the redkit platform" in text
        return text if done and email in text else None

    text = wait_for(shown, "the deployment's log and the welcome mail in the view")
    assert name in text
    assert f'data-deployment="{deployment}"' in text
    assert "state-success" in text or "state-deploying" in text or "state-building" in text
    assert f"<strong>{email}</strong>" in text  # the mail's recipient
    assert PASSWORD not in text


def test_the_platform_view_finds_a_user_by_email_or_id_and_lists_their_sessions(
    up: Up, http: httpx.Client, admin: httpx.Client
) -> None:
    email = new_email()
    user = register(up, http, email).json()
    login(up, http, email)
    by_email = admin.get("/platform", params={"q": email.split("@")[0]}, headers=HTML).text
    assert f'data-user="{user["id"]}"' in by_email
    assert ADMIN_EMAIL not in by_email.split('id="users"')[1].split('id="projects"')[0]
    by_id = admin.get("/platform", params={"q": user["id"], "user": user["id"]}, headers=HTML)
    assert f'data-user="{user["id"]}"' in by_id.text
    assert f"Sessions of {email}" in by_id.text
    assert by_id.text.count("<tr data-session=") == 1
    nobody = admin.get("/platform", params={"q": "%_"}, headers=HTML).text  # LIKE's wildcards
    assert "No user" in nobody


def test_an_admin_revokes_every_session_of_a_user_from_the_platform_view(
    up: Up, http: httpx.Client, admin: httpx.Client
) -> None:
    email = new_email()
    user = register(up, http, email).json()
    tokens = [login(up, http, email).json()["token"] for _ in range(2)]
    acted = act(admin, "platform.revoke_all", {"user": user["id"]})
    assert acted.status_code == 200, acted.text
    assert acted.json()["message"] == "2 session(s) revoked"
    for token in tokens:
        me = http.get(f"{up.gateway}/api/me", headers={"authorization": f"Bearer {token}"})
        assert me.status_code == 401
    audit = admin.get("/audit", headers=HTML).text
    assert "platform.revoke_all" in audit
    assert ADMIN_EMAIL in audit
    # Without the CSRF token the same action is refused.
    refused = admin.post("/actions/platform.revoke_all", json={"user": user["id"]})
    assert refused.status_code == 403


@pytest.mark.skipif(
    not hasattr(SessionStore, "revoke_prefix"),
    reason="SessionStore.revoke_prefix (revoke one session by its listed prefix) is not here",
)
def test_an_admin_revokes_one_session_of_a_user_and_the_other_lives(
    up: Up, http: httpx.Client, admin: httpx.Client
) -> None:
    email = new_email()
    user = register(up, http, email).json()
    first, second = (login(up, http, email).json()["token"] for _ in range(2))
    page = admin.get("/platform", params={"q": email, "user": user["id"]}, headers=HTML).text
    assert 'data-action="platform.revoke_session"' in page
    acted = act(admin, "platform.revoke_session", {"user": user["id"], "session": first[:8]})
    assert acted.status_code == 200, acted.text

    def status(token: str) -> int:
        headers = {"authorization": f"Bearer {token}"}
        return http.get(f"{up.gateway}/api/me", headers=headers).status_code

    assert status(first) == 401
    assert status(second) == 200
    again = act(admin, "platform.revoke_session", {"user": user["id"], "session": first[:8]})
    assert again.status_code == 404


# -- /metrics --------------------------------------------------------------------------------


def test_metrics_are_refused_to_anonymous_users_and_wrong_tokens(
    up: Up, http: httpx.Client
) -> None:
    anonymous = http.get(f"{up.gateway}/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "redkit_" not in anonymous.text
    wrong = http.get(f"{up.gateway}/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    user = http.get(f"{up.gateway}/metrics", headers=signed_in(up, http))
    assert user.status_code == 403


def test_metrics_are_served_to_an_admin_and_to_the_scrapers_token(
    up: Up, http: httpx.Client, admin: httpx.Client
) -> None:
    assert http.get(f"{up.gateway}/healthz").status_code == 200
    # A refused read first: a request is counted once answered, so this one is in the figures
    # whatever ran before this test.
    assert http.get(f"{up.gateway}/metrics").status_code == 401
    for answer in (
        admin.get("/metrics"),
        http.get(f"{up.gateway}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}),
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        assert "redkit_queue_jobs" in families
        requests = families["redkit_gateway_requests"]
        routes = {(s.labels["route"], s.labels["status"]) for s in requests.samples}
        assert ("/healthz", "200") in routes
        assert ("/metrics", "401") in routes
        assert "redkit_gateway_request_duration_seconds" in families
        # The admin's session, used on this gateway, counts among the active ones.
        (active,) = families["redkit_sessions_active"].samples
        assert active.value >= 1


# -- /api/admin/mail -------------------------------------------------------------------------


def test_admin_mail_lists_the_welcome_mail_newest_first_with_paging(
    up: Up, http: httpx.Client, admin: httpx.Client
) -> None:
    emails = [new_email(), new_email()]
    for email in emails:
        assert register(up, http, email).status_code == 201

    def both() -> list[dict[str, Any]] | None:
        answer = admin.get("/api/admin/mail", params={"limit": 100})
        assert answer.status_code == 200, answer.text
        messages = answer.json()["messages"]
        seen = [m for m in messages if m["to"] and m["to"][0] in emails]
        return messages if len(seen) == 2 else None

    messages = wait_for(both, "two welcome e-mails in the sink")
    mine = [m for m in messages if m["to"][0] in emails]
    assert all(m["subject"] == "Welcome to the redkit platform" for m in mine)
    assert "your account is ready" in mine[0]["text"]
    times = [m["time"] for m in messages]
    assert times == sorted(times, reverse=True)
    first = admin.get("/api/admin/mail", params={"limit": 1}).json()
    assert len(first["messages"]) == 1
    assert first["next_offset"] == 1
    second = admin.get("/api/admin/mail", params={"limit": 1, "offset": 1}).json()
    assert second["messages"][0]["id"] != first["messages"][0]["id"]
    assert second["messages"][0]["time"] <= first["messages"][0]["time"]
    last = admin.get("/api/admin/mail", params={"limit": 100, "offset": len(messages)}).json()
    assert last == {"messages": [], "limit": 100, "offset": len(messages), "next_offset": None}


def test_admin_mail_is_for_admins_only_and_checks_its_paging(
    up: Up, http: httpx.Client, admin: httpx.Client
) -> None:
    anonymous = http.get(f"{up.gateway}/api/admin/mail")
    assert anonymous.status_code == 401
    user = http.get(f"{up.gateway}/api/admin/mail", headers=signed_in(up, http))
    assert user.status_code == 403
    assert user.json() == {"detail": "admins only"}
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        bad = admin.get("/api/admin/mail", params=params)
        assert bad.status_code == 422, params
        assert bad.headers["content-type"] == "application/json"


# -- in a real browser -----------------------------------------------------------------------


async def test_an_admin_signs_in_through_the_form_and_sees_the_platform_view(
    up: Up,
    browser: Any,  # noqa: F811 (the fixture imported above: skips without a Chromium)
) -> None:
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page = await context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        first = await page.goto(f"{up.gateway}/")
        assert first is not None
        assert first.status == 401
        await page.get_by_label("E-mail").fill(ADMIN_EMAIL)
        await page.get_by_label("Password").fill(ADMIN_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        nav = page.get_by_role("navigation", name="Sections")
        await expect(nav.get_by_role("link", name="Platform")).to_be_visible(timeout=15_000)
        assert ADMIN_PASSWORD not in page.url  # the form posted JSON, nothing in the URL
        assert ADMIN_EMAIL not in page.url
        await nav.get_by_role("link", name="Platform").click()
        await expect(page.get_by_role("heading", name="Platform", exact=True)).to_be_visible()
        await expect(page.locator("table.users")).to_contain_text(ADMIN_EMAIL)
        await expect(page.get_by_role("heading", name="Mail")).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "platform.png"), full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the Platform view scrolls sideways by {overflow}px on a phone"
        assert errors == []
    finally:
        await context.close()
