"""The ASGI middleware and FastAPI dependencies: cookies, bearer tokens, rotation on login."""

from __future__ import annotations

import secrets
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Response

import redkit
from redkit.sessions import Session, SessionStore
from redkit.sessions.middleware import (
    RequestSession,
    SessionMiddleware,
    current_session,
    require_session,
)
from uvicorn_server import serve_in_loop

Current = Annotated[RequestSession, Depends(current_session)]
Required = Annotated[Session, Depends(require_session)]


def make_app(store: SessionStore, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, **options)

    @app.post("/login/{user}")
    async def login(user: str, session: Current) -> dict[str, Any]:
        s = await session.login(user, {"name": user})
        return {"token": s.id}

    @app.get("/me")
    async def me(s: Required) -> dict[str, Any]:
        return {"user": s.user_id, "data": s.data, "ip": s.ip, "agent": s.user_agent}

    @app.get("/whoami")
    async def whoami(session: Current) -> dict[str, Any]:
        return {"user": session.user_id, "via": session.via}

    @app.post("/prefs")
    async def prefs(session: Current) -> dict[str, Any]:
        return (await session.update({"theme": "dark"})).data

    @app.post("/rotate")
    async def rotate(session: Current) -> dict[str, Any]:
        return {"token": (await session.rotate()).id}

    @app.post("/logout")
    async def logout(session: Current) -> dict[str, Any]:
        return {"ended": await session.logout()}

    @app.post("/logout-everywhere")
    async def everywhere(session: Current) -> dict[str, Any]:
        return {"ended": await session.logout_everywhere()}

    return app


@pytest.fixture
def store(rk: redkit.Redkit) -> SessionStore:
    return rk.sessions(idle_ttl=60, absolute_ttl=3600)


def client(app: FastAPI, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def test_login_sets_an_httponly_lax_secure_cookie(store: SessionStore) -> None:
    async with client(make_app(store), "https://app.example") as http:
        response = await http.post("/login/alice", headers={"user-agent": "pytest-agent"})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    token = response.json()["token"]
    assert cookie.startswith(f"session={token}; ")
    for attribute in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=3600"):
        assert attribute in cookie.split("; ")
    s = await store.get(token)
    assert s is not None
    assert (s.user_id, s.user_agent, s.data) == ("alice", "pytest-agent", {"name": "alice"})


async def test_a_browser_signs_in_reads_updates_and_signs_out(store: SessionStore) -> None:
    async with client(make_app(store, secure=False)) as http:
        assert (await http.get("/me")).status_code == 401
        await http.post("/login/bob")
        me = await http.get("/me")
        assert me.status_code == 200
        assert me.json()["user"] == "bob"
        assert "set-cookie" not in me.headers  # reading writes no cookie
        assert (await http.post("/prefs")).json() == {"name": "bob", "theme": "dark"}
        assert (await http.get("/me")).json()["data"] == {"name": "bob", "theme": "dark"}
        out = await http.post("/logout")
        assert out.json() == {"ended": True}
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert (await http.get("/me")).status_code == 401
    assert await store.list("bob") == []


async def test_signing_in_always_issues_a_new_id(store: SessionStore) -> None:
    async with client(make_app(store, secure=False)) as http:
        # An attacker plants a session ID (fixation); the victim then signs in with it.
        planted = await store.create("attacker", {})
        http.cookies.set("session", planted.id)
        first = (await http.post("/login/victim")).json()["token"]
        assert first != planted.id
        assert await store.get(planted.id) is None
        second = (await http.post("/login/victim")).json()["token"]
        assert second != first
        assert await store.get(first) is None
        assert (await http.get("/me")).json()["user"] == "victim"
        rotated = (await http.post("/rotate")).json()["token"]
        assert await store.get(second) is None
        assert (await http.get("/me")).json()["user"] == "victim"
        assert [i.id_prefix for i in await store.list("victim")] == [rotated[:8]]


async def test_a_dead_or_forged_cookie_is_cleared(store: SessionStore) -> None:
    async with client(make_app(store, secure=False)) as http:
        http.cookies.set("session", "forged")
        response = await http.get("/whoami")
        assert response.json() == {"user": None, "via": "cookie"}
        assert response.headers["set-cookie"].startswith("session=; Max-Age=0")


async def test_a_cookie_the_app_sets_itself_is_not_cleared_after_it(store: SessionStore) -> None:
    # A gateway in front of the service that signs users in: the request came with a stale
    # cookie, which the gateway's middleware clears, but the response (from the service)
    # sets a fresh one, and the clearing must not land after it.
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, secure=False)
    fresh = await store.create("carol", {})

    @app.post("/proxied-login")
    async def proxied_login() -> Response:
        response = Response(b"{}", media_type="application/json")
        response.headers.append("set-cookie", f"session={fresh.id}; Path=/; HttpOnly")
        return response

    stale = {"cookie": "session=expired-long-ago"}
    async with client(app) as http:
        response = await http.post("/proxied-login", headers=stale)
        assert response.headers.get_list("set-cookie") == [f"session={fresh.id}; Path=/; HttpOnly"]
        # Without a cookie of the app's own, the stale one is still cleared.
        cleared = await http.post("/nowhere", headers=stale)
        assert cleared.headers.get_list("set-cookie")[0].startswith("session=; Max-Age=0")


async def test_bearer_tokens_for_apis_never_get_cookies(store: SessionStore) -> None:
    app = make_app(store, cookies=False)
    async with client(app) as http:
        login = await http.post("/login/carol")
        assert "set-cookie" not in login.headers
        token = login.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        me = await http.get("/me", headers=auth)
        assert me.status_code == 200
        assert me.json()["user"] == "carol"
        assert (await http.get("/whoami", headers=auth)).json()["via"] == "bearer"
        rotated = (await http.post("/rotate", headers=auth)).json()["token"]
        assert (await http.get("/me", headers=auth)).status_code == 401
        assert (await http.get("/me", headers={"authorization": f"bearer {rotated}"})).is_success
        unauthorized = await http.get("/me", headers={"Authorization": "Bearer nope"})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["www-authenticate"] == "Bearer"
    # With cookies on too, a bearer-authenticated request still gets no cookie.
    async with client(make_app(store)) as http:
        response = await http.post("/rotate", headers={"Authorization": f"Bearer {rotated}"})
        assert response.is_success
        assert "set-cookie" not in response.headers


async def test_a_signed_cookie_refuses_a_bare_or_tampered_value(store: SessionStore) -> None:
    app = make_app(store, secure=False, signing_key=secrets.token_bytes(32))
    async with client(app) as http:
        token = (await http.post("/login/dave")).json()["token"]
        signed = http.cookies["session"]
        assert signed.startswith(token + ".")
        assert len(signed) > len(token) + 40
        assert (await http.get("/me")).status_code == 200
        # The live token alone, without the signature, is refused...
        http.cookies.set("session", token)
        assert (await http.get("/me")).status_code == 401
        # ...and so is a signature with one character changed.
        last = "A" if signed[-1] != "A" else "B"
        http.cookies.set("session", signed[:-1] + last)
        assert (await http.get("/me")).status_code == 401


async def test_logout_everywhere_ends_every_session_of_the_user(store: SessionStore) -> None:
    other = await store.create("erin", {})
    async with client(make_app(store, secure=False)) as http:
        await http.post("/login/erin")
        assert (await http.post("/logout-everywhere")).json() == {"ended": 2}
        assert (await http.get("/me")).status_code == 401
    assert await store.get(other.id) is None


def test_middleware_options_are_checked(store: SessionStore) -> None:
    app = FastAPI()
    with pytest.raises(redkit.InvalidInput, match="32 bytes"):
        SessionMiddleware(app, store, signing_key="short")
    with pytest.raises(redkit.ConfigurationError, match="Secure"):
        SessionMiddleware(app, store, same_site="none", secure=False)
    with pytest.raises(redkit.ConfigurationError, match="Secure"):
        SessionMiddleware(app, store, cookie_name="__Host-session", secure=False)
    with pytest.raises(redkit.ConfigurationError, match="same_site"):
        SessionMiddleware(app, store, same_site="Lax")  # type: ignore[arg-type]
    with pytest.raises(redkit.ConfigurationError, match="cookie_name"):
        SessionMiddleware(app, store, cookie_name="my session")
    with pytest.raises(redkit.InvalidInput, match="cookies, bearer"):
        SessionMiddleware(app, store, cookies=False, bearer=False)


async def test_without_the_middleware_the_dependency_says_what_to_do(
    store: SessionStore,
) -> None:
    app = FastAPI()

    @app.get("/")
    async def root(session: Current) -> None:
        raise AssertionError("unreachable")

    with pytest.raises(RuntimeError, match=r"add redkit\.sessions\.middleware\.SessionMiddleware"):
        async with client(app) as http:
            await http.get("/")


def serving(app: FastAPI) -> AbstractAsyncContextManager[str]:
    return serve_in_loop(app)


@pytest.mark.cluster
async def test_a_real_http_server_keeps_a_browser_signed_in(store: SessionStore) -> None:
    async with (
        serving(make_app(store, secure=False)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get("/me")).status_code == 401
        await http.post("/login/frank", headers={"user-agent": "real-browser"})
        me = (await http.get("/me")).json()
        assert me["user"] == "frank"
        assert me["ip"] == "127.0.0.1"
        assert me["agent"] == "real-browser"
        assert (await http.post("/logout")).json() == {"ended": True}
        assert (await http.get("/me")).status_code == 401


def _secure_flags(headers: httpx.Headers) -> list[bool]:
    return ["Secure" in h.split("; ") for h in headers.get_list("set-cookie")]


@pytest.mark.parametrize(
    ("base_url", "host", "secure"),
    [
        ("http://127.0.0.1:8000", None, False),
        ("http://localhost:8000", None, False),
        ("http://[::1]:8000", None, False),
        ("http://app.localhost", None, False),
        ("http://testserver", None, False),  # Starlette's TestClient
        ("https://127.0.0.1:8443", None, True),  # HTTPS: always Secure
        ("http://app.example", None, True),  # a public name over plain HTTP still gets Secure
        ("http://192.168.1.20:8000", None, True),
        ("http://127.0.0.1:8000", "localhost.attacker.example", True),
        ("http://127.0.0.1:8000", "127.0.0.1.nip.io", True),
    ],
)
async def test_the_default_cookie_is_secure_except_on_plain_http_to_this_machine(
    store: SessionStore, base_url: str, host: str | None, secure: bool
) -> None:
    headers = {"host": host} if host else {}
    async with client(make_app(store), base_url) as http:
        login = await http.post("/login/gina", headers=headers)
        assert _secure_flags(login.headers) == [secure]
        # The cookie that clears a session carries the same flag.
        http.cookies.set("session", "forged")
        cleared = await http.get("/whoami", headers=headers)
        assert _secure_flags(cleared.headers) == [secure]


async def test_secure_true_or_false_is_applied_whatever_the_request(store: SessionStore) -> None:
    async with client(make_app(store, secure=True), "http://127.0.0.1:8000") as http:
        assert _secure_flags((await http.post("/login/hal")).headers) == [True]
    async with client(make_app(store, secure=False), "https://app.example") as http:
        assert _secure_flags((await http.post("/login/hal")).headers) == [False]
    # SameSite=None and __Host- cookies are useless without Secure: the default gives it.
    async with client(make_app(store, same_site="none"), "http://127.0.0.1:8000") as http:
        assert _secure_flags((await http.post("/login/hal")).headers) == [True]


async def test_a_local_plain_http_run_keeps_its_cookie_with_the_default_options(
    store: SessionStore,
) -> None:
    # The README's first run: `uvicorn myapp:app` on 127.0.0.1 and an httpx client. A Secure
    # cookie would never be sent back over plain HTTP, so /me would be 401 after login.
    async with (
        serving(make_app(store)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        login = await http.post("/login/ivy")
        assert "Secure" not in login.headers["set-cookie"].split("; ")
        me = await http.get("/me")
        assert me.status_code == 200
        assert me.json()["user"] == "ivy"
