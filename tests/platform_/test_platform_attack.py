"""A hostile client against the platform's newer surface (cache, events, dashboard, admin and
member APIs), over HTTP against a real ``redkit up``. Each test is a regression test of a
finding of the attacker's pass; what held is listed in the pass's report."""

from __future__ import annotations

import asyncio
import secrets
from contextlib import AsyncExitStack
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from platform_.harness import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Up,
    login,
    new_email,
    random_loopback,
    register,
)
from redkit.platform.events import MAX_STREAMS_PER_USER

Headers = dict[str, str]


def user(up: Up, http: httpx.Client) -> tuple[str, Headers]:
    email = new_email()
    assert register(up, http, email).status_code == 201
    answer = login(up, http, email)
    assert answer.status_code == 200, answer.text
    return email, {"authorization": f"Bearer {answer.json()['token']}"}


def project_of(up: Up, http: httpx.Client, headers: Headers) -> str:
    made = http.post(
        f"{up.gateway}/api/projects", json={"name": "k" + secrets.token_hex(4)}, headers=headers
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def roles(up: Up, http: httpx.Client, headers: Headers, project: str) -> dict[str, str]:
    listed = http.get(f"{up.gateway}/api/projects/{project}/members", headers=headers)
    assert listed.status_code == 200, listed.text
    return {m["email"]: m["role"] for m in listed.json()["members"]}


# -- members: a role change obeys the same rules as a removal ----------------------------------


def test_a_maintainer_cannot_demote_an_owner_by_adding_it_again(up: Up, http: httpx.Client) -> None:
    owner_email, owner = user(up, http)
    maintainer_email, maintainer = user(up, http)
    project = project_of(up, http, owner)
    added = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": maintainer_email, "role": "maintainer"},
        headers=owner,
    )
    assert added.status_code == 201, added.text
    demoted = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": owner_email, "role": "viewer"},
        headers=maintainer,
    )
    assert demoted.status_code == 403, demoted.text
    assert roles(up, http, owner, project)[owner_email] == "owner"


def test_a_maintainer_cannot_demote_another_maintainer(up: Up, http: httpx.Client) -> None:
    _, owner = user(up, http)
    first_email, first = user(up, http)
    second_email, _ = user(up, http)
    project = project_of(up, http, owner)
    for email in (first_email, second_email):
        added = http.post(
            f"{up.gateway}/api/projects/{project}/members",
            json={"email": email, "role": "maintainer"},
            headers=owner,
        )
        assert added.status_code == 201, added.text
    demoted = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": second_email, "role": "viewer"},
        headers=first,
    )
    assert demoted.status_code == 403, demoted.text
    assert roles(up, http, owner, project)[second_email] == "maintainer"


def test_the_last_owner_cannot_demote_itself_and_leave_a_project_without_owner(
    up: Up, http: httpx.Client
) -> None:
    owner_email, owner = user(up, http)
    project = project_of(up, http, owner)
    demoted = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": owner_email, "role": "maintainer"},
        headers=owner,
    )
    assert demoted.status_code == 409, demoted.text
    assert roles(up, http, owner, project)[owner_email] == "owner"


def test_an_owner_still_demotes_another_owner_and_promotes_a_viewer(
    up: Up, http: httpx.Client
) -> None:
    _, owner = user(up, http)
    other_email, _ = user(up, http)
    viewer_email, _ = user(up, http)
    project = project_of(up, http, owner)
    for email, role in ((other_email, "owner"), (viewer_email, "viewer")):
        added = http.post(
            f"{up.gateway}/api/projects/{project}/members",
            json={"email": email, "role": role},
            headers=owner,
        )
        assert added.status_code == 201, added.text
    for email, role in ((other_email, "viewer"), (viewer_email, "maintainer")):
        changed = http.post(
            f"{up.gateway}/api/projects/{project}/members",
            json={"email": email, "role": role},
            headers=owner,
        )
        assert changed.status_code == 201, changed.text
    now = roles(up, http, owner, project)
    assert (now[other_email], now[viewer_email]) == ("viewer", "maintainer")


def test_two_owners_demoting_each_other_at_once_leave_one_owner(up: Up, http: httpx.Client) -> None:
    first_email, first = user(up, http)
    second_email, second = user(up, http)
    project = project_of(up, http, first)
    added = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": second_email, "role": "owner"},
        headers=first,
    )
    assert added.status_code == 201, added.text

    async def both() -> list[int]:
        jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        transport = httpx.AsyncHTTPTransport(local_address=random_loopback())
        async with httpx.AsyncClient(transport=transport, timeout=30, cookies=jar) as client:
            answers = await asyncio.gather(
                client.post(
                    f"{up.gateway}/api/projects/{project}/members",
                    json={"email": second_email, "role": "viewer"},
                    headers=first,
                ),
                client.post(
                    f"{up.gateway}/api/projects/{project}/members",
                    json={"email": first_email, "role": "viewer"},
                    headers=second,
                ),
            )
        return sorted(a.status_code for a in answers)

    statuses = asyncio.run(both())
    left = roles(up, http, first, project)
    owners = [email for email, role in left.items() if role == "owner"]
    assert len(owners) == 1, (statuses, left)
    # The loser is refused: 409 (last owner) or 403 (no longer an owner when it acted).
    assert statuses[0] == 201, statuses
    assert statuses[1] in (403, 409), statuses


# -- events: one account cannot pile up open streams --------------------------------------------


async def test_one_user_cannot_hold_unbounded_open_event_streams(up: Up) -> None:
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    transport = httpx.AsyncHTTPTransport(local_address=random_loopback())
    limits = httpx.Limits(max_connections=MAX_STREAMS_PER_USER + 8)
    async with (
        httpx.AsyncClient(transport=transport, timeout=30, cookies=jar, limits=limits) as client,
        AsyncExitStack() as streams,
    ):
        email = new_email()
        password = "correct horse battery"
        await client.post(
            f"{up.gateway}/auth/register", json={"email": email, "password": password, "name": "A"}
        )
        answer = await client.post(
            f"{up.gateway}/auth/login", json={"email": email, "password": password}
        )
        headers = {"authorization": f"Bearer {answer.json()['token']}"}
        for _ in range(MAX_STREAMS_PER_USER):
            opened = await streams.enter_async_context(
                client.stream("GET", f"{up.gateway}/events", headers=headers)
            )
            assert opened.status_code == 200
        # A stream, so that the old code's 200 fails the test instead of streaming forever.
        async with client.stream("GET", f"{up.gateway}/events", headers=headers) as refused:
            assert refused.status_code == 429
            assert (await refused.aread()).startswith(b'{"error":"too_many_streams"')
        url = up.gateway.replace("http://", "ws://") + "/ws"
        with pytest.raises(InvalidStatus) as socket_refused:
            async with ws_connect(url, additional_headers=headers):
                pass
        assert socket_refused.value.response.status_code == 429
        # Another user is not affected by this one's streams.
        other = new_email()
        await client.post(
            f"{up.gateway}/auth/register", json={"email": other, "password": password, "name": "B"}
        )
        theirs = await client.post(
            f"{up.gateway}/auth/login", json={"email": other, "password": password}
        )
        async with client.stream(
            "GET",
            f"{up.gateway}/events",
            headers={"authorization": f"Bearer {theirs.json()['token']}"},
        ) as response:
            assert response.status_code == 200
    # Every stream closed: the user may open one again (the count was given back).
    async with httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=random_loopback()),
        timeout=30,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    ) as client:
        for _ in range(100):  # bounded: the server notices closed streams within moments
            async with client.stream("GET", f"{up.gateway}/events", headers=headers) as response:
                if response.status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert response.status_code == 200


# -- a login racing a change of the user's type -------------------------------------------------


async def test_a_login_racing_a_type_change_never_keeps_a_session_of_the_old_type(up: Up) -> None:
    """The login reads the user, spends an argon2 verification, then makes the session; a
    type change that commits and revokes every session in between must not leave that new
    session alive with the old type (a demoted admin keeping an admin session)."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    transport = httpx.AsyncHTTPTransport(local_address=random_loopback())
    async with httpx.AsyncClient(transport=transport, timeout=60, cookies=jar) as client:
        admin = await client.post(
            f"{up.gateway}/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        assert admin.status_code == 200, admin.text
        admin_headers = {"authorization": f"Bearer {admin.json()['token']}"}
        email, password = new_email(), "correct horse battery"
        made = await client.post(
            f"{up.gateway}/auth/register", json={"email": email, "password": password, "name": "A"}
        )
        user_id = made.json()["id"]

        async def a_login() -> httpx.Response:
            # A client of its own each: the per-IP login limit is not what is tested.
            own = httpx.AsyncHTTPTransport(local_address=random_loopback())
            async with httpx.AsyncClient(transport=own, timeout=60, cookies=CookieJar()) as c:
                return await c.post(
                    f"{up.gateway}/auth/login", json={"email": email, "password": password}
                )

        async def promote() -> httpx.Response:
            await asyncio.sleep(0.01)  # inside the logins' password checks
            return await client.patch(
                f"{up.gateway}/api/admin/users/{user_id}",
                json={"type": "premium"},
                headers=admin_headers,
            )

        *logins, changed = await asyncio.gather(*(a_login() for _ in range(4)), promote())
        assert changed.status_code == 200, changed.text
        for answer in logins:
            assert answer.status_code == 200, answer.text
            token = answer.json()["token"]
            seen = await client.get(
                f"{up.gateway}/api/me", headers={"authorization": f"Bearer {token}"}
            )
            if seen.status_code == 401:
                continue  # ended by the type change: fine
            assert seen.status_code == 200, seen.text
            # A live session has the new type: the premium tier's limit, not the user's.
            assert seen.headers["x-ratelimit-limit"] == "1000", (
                answer.json()["user"]["type"],
                seen.headers["x-ratelimit-limit"],
            )


# -- CSRF: a same-site page's plain form must not write with the victim's cookie ----------------


def test_a_form_from_another_origin_of_the_same_site_cannot_write_with_the_cookie(
    up: Up, http: httpx.Client
) -> None:
    """SameSite=Lax keeps the cookie off cross-site posts only; a page on another port of the
    same host is the same site, and its form (no custom header, an empty or urlencoded body)
    would start a deployment or sign the victim out everywhere."""
    _, owner = user(up, http)
    project = project_of(up, http, owner)
    email = new_email()
    assert register(up, http, email).status_code == 201
    signed = login(up, http, email)
    cookie = signed.headers["set-cookie"].split(";", 1)[0]
    token = signed.json()["token"]
    added = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": email, "role": "maintainer"},
        headers=owner,
    )
    assert added.status_code == 201, added.text
    port = int(up.gateway.rpartition(":")[2])
    evil = f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}"
    form = {
        "cookie": cookie,
        "origin": evil,
        "content-type": "application/x-www-form-urlencoded",
    }
    for sent in (form, {**form, "sec-fetch-site": "same-site"}, {**form, "origin": "null"}):
        deployed = http.post(f"{up.gateway}/api/projects/{project}/deployments", headers=sent)
        assert deployed.status_code == 403, deployed.text
        assert deployed.json()["detail"].startswith("a write from another origin")
        ended = http.post(f"{up.gateway}/auth/logout-all", headers=sent)
        assert ended.status_code == 403, ended.text
    # The session lives on; the same page of the platform's own origin, and any non-browser
    # client (no Origin), still write.
    me = http.get(f"{up.gateway}/api/me", headers={"authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    own = {**form, "origin": up.gateway, "sec-fetch-site": "same-origin"}
    assert http.post(
        f"{up.gateway}/api/projects/{project}/deployments", headers=own
    ).status_code in (
        202,
        409,
    )
    plain = {"cookie": cookie}
    assert http.post(
        f"{up.gateway}/api/projects/{project}/deployments", headers=plain
    ).status_code in (
        202,
        409,
    )


def test_an_admins_cookie_cannot_publish_an_alert_from_another_origins_text_form(
    up: Up, http: httpx.Client
) -> None:
    """A text/plain form can spell a JSON body (name ``{"message":"x``, value ``"}``); the
    alert endpoint reads the body whatever its type, so only the origin check stops it."""
    signed = login(up, http, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert signed.status_code == 200, signed.text
    cookie = signed.headers["set-cookie"].split(";", 1)[0]
    port = int(up.gateway.rpartition(":")[2])
    published = http.post(
        f"{up.gateway}/api/admin/alerts",
        content=b'{"message":"forged="}',
        headers={
            "cookie": cookie,
            "origin": f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}",
            "content-type": "text/plain",
        },
    )
    assert published.status_code == 403, published.text
