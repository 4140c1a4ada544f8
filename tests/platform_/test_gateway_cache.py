"""The gateway's response cache over a real ``redkit up`` (issue 15): ``GET /api/users/{id}``
shared by signed-in callers, ``GET /api/projects`` per session, every write that makes a page
stale invalidating exactly that page, and the projects service's permission cache dropped when
a membership changes (a removed member loses access at once)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import pytest

import redkit
from platform_.harness import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Up,
    admin_redis_url,
    login,
    new_email,
    register,
)

Headers = dict[str, str]


def client() -> httpx.Client:
    """A client with a loopback address of its own: register and login are anonymous requests
    (10 a minute per address), so a test with several users spreads them over addresses."""
    address = (
        f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    )
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(
        transport=httpx.HTTPTransport(local_address=address), timeout=30, cookies=jar
    )


class User:
    """A registered, signed-in user: its id, e-mail and bearer header."""

    def __init__(self, up: Up) -> None:
        self.email = new_email()
        with client() as http:
            registered = register(up, http, self.email)
            assert registered.status_code == 201, registered.text
            self.id: str = registered.json()["id"]
            self.auth: Headers = self.sign_in(up, http)

    def sign_in(self, up: Up, http: httpx.Client) -> Headers:
        answer = login(up, http, self.email)
        assert answer.status_code == 200, answer.text
        return {"authorization": f"Bearer {answer.json()['token']}"}


@pytest.fixture(scope="module")
def admin(up: Up) -> Headers:
    """One admin session for the module (logins are limited to 5 a minute per account)."""
    with client() as http:
        answer = login(up, http, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert answer.status_code == 200, answer.text
        return {"authorization": f"Bearer {answer.json()['token']}"}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with client() as c:
        yield c


def get(http: httpx.Client, up: Up, path: str, headers: Headers | None = None) -> httpx.Response:
    return http.get(f"{up.gateway}{path}", headers=headers)


def cached(http: httpx.Client, up: Up, path: str, headers: Headers) -> httpx.Response:
    """GET ``path`` until it is a HIT (the first answer is a MISS); the HIT."""
    first = get(http, up, path, headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS", first.headers
    again = get(http, up, path, headers)
    assert again.headers["x-cache"] == "HIT", again.headers
    assert again.json() == first.json()
    return again


def project_names(response: httpx.Response) -> set[str]:
    return {p["name"] for p in response.json()["projects"]}


def new_project(http: httpx.Client, up: Up, owner: Headers) -> dict[str, Any]:
    created = http.post(
        f"{up.gateway}/api/projects", json={"name": "c" + secrets.token_hex(4)}, headers=owner
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def add_member(
    http: httpx.Client, up: Up, owner: Headers, project: str, email: str, role: str = "viewer"
) -> None:
    added = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": email, "role": role},
        headers=owner,
    )
    assert added.status_code == 201, added.text


def cached_role(up: Up, user_id: str, project_id: str) -> Any:
    """What the projects service's permission cache holds for ``user_id`` in the project."""

    async def read() -> Any:
        async with redkit.connect(admin_redis_url(up), namespace="platform") as rk:
            return await rk.sessions().permissions(user_id, project_id).get()

    return asyncio.run(read())


# -- GET /api/users/{id} -----------------------------------------------------------------------


def test_a_users_page_is_shared_by_every_signed_in_caller_and_shows_public_fields_only(
    up: Up, http: httpx.Client
) -> None:
    ada, bob, cy = User(up), User(up), User(up)
    path = f"/api/users/{ada.id}"
    first = get(http, up, path, bob.auth)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    assert set(first.json()) == {"id", "name", "type", "created_at"}  # no e-mail
    assert first.json()["id"] == ada.id
    by_another = get(http, up, path, cy.auth)
    assert by_another.headers["x-cache"] == "HIT"
    assert by_another.json() == first.json()
    assert "set-cookie" not in by_another.headers


def test_a_users_page_is_401_anonymous_and_404_json_for_an_unknown_or_malformed_id(
    up: Up, http: httpx.Client
) -> None:
    ada = User(up)
    anonymous = get(http, up, f"/api/users/{ada.id}")
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"]
    for bad in ("0" * 32, ada.id.upper(), ada.id + "0", ada.id[:31], "x", "%00"):
        answer = get(http, up, f"/api/users/{bad}", ada.auth)
        assert answer.status_code == 404, (bad, answer.text)
        assert answer.json()["detail"] in ("no such user", "no such path")  # %00: the gateway's


def test_an_admin_changing_a_users_type_invalidates_its_page(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    ada, bob = User(up), User(up)
    path = f"/api/users/{ada.id}"
    assert cached(http, up, path, bob.auth).json()["type"] == "user"
    changed = http.patch(
        f"{up.gateway}/api/admin/users/{ada.id}", json={"type": "premium"}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    after = get(http, up, path, bob.auth)
    assert after.headers["x-cache"] == "MISS"
    assert after.json()["type"] == "premium"


# -- GET /api/projects ---------------------------------------------------------------------


def test_a_project_list_is_cached_per_session_and_never_served_to_another(
    up: Up, http: httpx.Client
) -> None:
    ada, bob = User(up), User(up)
    mine = new_project(http, up, ada.auth)
    hit = cached(http, up, "/api/projects", ada.auth)
    assert mine["name"] in project_names(hit)
    other = get(http, up, "/api/projects", bob.auth)
    assert other.headers["x-cache"] == "MISS"
    assert mine["name"] not in project_names(other)
    with client() as second:
        another_session = ada.sign_in(up, second)
    assert get(http, up, "/api/projects", another_session).headers["x-cache"] == "MISS"


def test_a_cookie_session_gets_its_list_cached_and_no_hit_sets_a_cookie(
    up: Up, http: httpx.Client
) -> None:
    ada = User(up)
    signed = login(up, http, ada.email)
    cookie = {"cookie": f"session={signed.cookies['session']}"}
    hit = cached(http, up, "/api/projects", cookie)
    assert "set-cookie" not in hit.headers
    http.post(f"{up.gateway}/auth/logout", headers=cookie)
    dead = get(http, up, "/api/projects", cookie)
    assert dead.status_code == 401
    assert dead.headers["x-cache"] == "BYPASS"  # the cookie names no live session now


@pytest.mark.parametrize("how", ["logout", "logout-all"])
def test_a_signed_out_session_never_gets_its_cached_list(
    up: Up, http: httpx.Client, how: str
) -> None:
    ada = User(up)
    cached(http, up, "/api/projects", ada.auth)
    assert http.post(f"{up.gateway}/auth/{how}", headers=ada.auth).status_code == 200
    after = get(http, up, "/api/projects", ada.auth)
    assert after.status_code == 401
    assert after.headers["x-cache"] == "BYPASS"


def test_creating_a_project_invalidates_the_creators_lists_and_the_admins_only(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    ada, bob = User(up), User(up)
    with client() as second:
        ada_elsewhere = ada.sign_in(up, second)
    for headers in (ada.auth, ada_elsewhere, bob.auth, admin):
        cached(http, up, "/api/projects", headers)
    project = new_project(http, up, ada.auth)
    for headers in (ada.auth, ada_elsewhere, admin):  # all of ada's sessions, and the admin's
        after = get(http, up, "/api/projects", headers)
        assert after.headers["x-cache"] == "MISS"
        assert project["name"] in project_names(after)
    untouched = get(http, up, "/api/projects", bob.auth)
    assert untouched.headers["x-cache"] == "HIT"
    assert project["name"] not in project_names(untouched)


def test_adding_a_member_invalidates_that_members_list_only(up: Up, http: httpx.Client) -> None:
    owner, member = User(up), User(up)
    project = new_project(http, up, owner.auth)
    cached(http, up, "/api/projects", owner.auth)
    assert project["name"] not in project_names(cached(http, up, "/api/projects", member.auth))
    add_member(http, up, owner.auth, project["id"], member.email)
    after = get(http, up, "/api/projects", member.auth)
    assert after.headers["x-cache"] == "MISS"
    assert project["name"] in project_names(after)
    assert get(http, up, "/api/projects", owner.auth).headers["x-cache"] == "HIT"


def test_a_removed_member_loses_the_project_at_once_and_its_list_is_fresh(
    up: Up, http: httpx.Client
) -> None:
    owner, member = User(up), User(up)
    project = new_project(http, up, owner.auth)
    add_member(http, up, owner.auth, project["id"], member.email)
    page = f"/api/projects/{project['id']}"
    for _ in range(2):  # the second read is answered from the permission cache
        assert get(http, up, page, member.auth).status_code == 200
    assert cached_role(up, member.id, project["id"]) == {"role": "viewer"}
    assert project["name"] in project_names(cached(http, up, "/api/projects", member.auth))
    removed = http.delete(f"{up.gateway}{page}/members/{member.id}", headers=owner.auth)
    assert removed.status_code == 204, removed.text
    assert get(http, up, page, member.auth).status_code == 404  # not an hour later: now
    after = get(http, up, "/api/projects", member.auth)
    assert after.headers["x-cache"] == "MISS"
    assert project["name"] not in project_names(after)


def test_deleting_a_project_invalidates_every_members_list_and_the_admins(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    owner, member, stranger = User(up), User(up), User(up)
    project = new_project(http, up, owner.auth)
    add_member(http, up, owner.auth, project["id"], member.email)
    assert get(http, up, f"/api/projects/{project['id']}", member.auth).status_code == 200
    for headers in (owner.auth, member.auth, admin, stranger.auth):
        cached(http, up, "/api/projects", headers)
    deleted = http.delete(f"{up.gateway}/api/projects/{project['id']}", headers=owner.auth)
    assert deleted.status_code == 204
    for headers in (owner.auth, member.auth, admin):
        after = get(http, up, "/api/projects", headers)
        assert after.headers["x-cache"] == "MISS"
        assert project["name"] not in project_names(after)
    assert get(http, up, "/api/projects", stranger.auth).headers["x-cache"] == "HIT"
    assert cached_role(up, member.id, project["id"]) is None


# -- the permission cache --------------------------------------------------------------------


def test_a_role_change_drops_the_cached_role(up: Up, http: httpx.Client) -> None:
    owner, member = User(up), User(up)
    project = new_project(http, up, owner.auth)
    add_member(http, up, owner.auth, project["id"], member.email)
    assert get(http, up, f"/api/projects/{project['id']}", member.auth).status_code == 200
    assert cached_role(up, member.id, project["id"]) == {"role": "viewer"}
    add_member(http, up, owner.auth, project["id"], member.email, role="maintainer")
    assert cached_role(up, member.id, project["id"]) is None
    assert get(http, up, f"/api/projects/{project['id']}", member.auth).status_code == 200
    assert cached_role(up, member.id, project["id"]) == {"role": "maintainer"}


def test_a_non_member_is_cached_as_one_and_added_members_get_in_at_once(
    up: Up, http: httpx.Client
) -> None:
    owner, member = User(up), User(up)
    project = new_project(http, up, owner.auth)
    page = f"/api/projects/{project['id']}"
    assert get(http, up, page, member.auth).status_code == 404
    assert cached_role(up, member.id, project["id"]) == {"role": None}
    add_member(http, up, owner.auth, project["id"], member.email)
    assert get(http, up, page, member.auth).status_code == 200


def test_logout_all_drops_the_users_cached_roles(up: Up, http: httpx.Client) -> None:
    owner = User(up)
    project = new_project(http, up, owner.auth)
    assert get(http, up, f"/api/projects/{project['id']}", owner.auth).status_code == 200
    assert cached_role(up, owner.id, project["id"]) == {"role": "owner"}
    assert http.post(f"{up.gateway}/auth/logout-all", headers=owner.auth).status_code == 200
    assert cached_role(up, owner.id, project["id"]) is None


def test_who_may_remove_a_member(up: Up, http: httpx.Client) -> None:
    owner, maintainer, viewer = User(up), User(up), User(up)
    project = new_project(http, up, owner.auth)["id"]
    add_member(http, up, owner.auth, project, maintainer.email, role="maintainer")
    add_member(http, up, owner.auth, project, viewer.email)

    def remove(who: Headers, user: User) -> httpx.Response:
        return http.delete(f"{up.gateway}/api/projects/{project}/members/{user.id}", headers=who)

    assert remove(viewer.auth, maintainer).status_code == 403
    assert remove(maintainer.auth, owner).status_code == 403
    last_owner = remove(owner.auth, owner)
    assert last_owner.status_code == 409
    assert last_owner.json()["detail"]
    assert remove(maintainer.auth, viewer).status_code == 204
    assert remove(maintainer.auth, viewer).status_code == 404  # not a member any more
    assert remove(maintainer.auth, maintainer).status_code == 204  # leaving is always allowed
    gone = http.delete(
        f"{up.gateway}/api/projects/{project}/members/{'0' * 32}", headers=owner.auth
    )
    assert gone.status_code == 404


def test_a_removed_member_loses_the_projects_deployments_at_once(
    up: Up, http: httpx.Client
) -> None:
    owner, member = User(up), User(up)
    project = new_project(http, up, owner.auth)
    started = http.post(
        f"{up.gateway}/api/projects/{project['id']}/deployments", json={}, headers=owner.auth
    )
    assert started.status_code == 202, started.text
    deployment = f"/api/deployments/{started.json()['id']}"
    assert get(http, up, deployment, member.auth).status_code == 404
    add_member(http, up, owner.auth, project["id"], member.email)
    for _ in range(2):
        assert get(http, up, deployment, member.auth).status_code == 200
    removed = http.delete(
        f"{up.gateway}/api/projects/{project['id']}/members/{member.id}", headers=owner.auth
    )
    assert removed.status_code == 204
    assert get(http, up, deployment, member.auth).status_code == 404
