"""The auth service: register, login, logout, logout everywhere, my sessions, ``/api/me``.

``GET /auth/sessions`` lists the caller's live sessions (device, IP, created, last seen, the
ID prefix); ``DELETE /auth/sessions/{id-prefix}`` ends one of them (the caller's own only: a
prefix of another user's session is unknown, 404; one that names several is 409; a malformed
or too short one 400), through :meth:`SessionStore.revoke_prefix`, one atomic script, so the
session is dead for every service and the gateway at once.

Sessions are redkit's (``rk.sessions()``, shared by every process through Valkey): the service
runs :class:`redkit.sessions.middleware.SessionMiddleware` itself, so login sets the cookie
(always a new session ID) and logout-all ends every session of the user at once, for every
service and the gateway, which resolve sessions from the same store. Passwords are hashed with
argon2id (argon2-cffi), in a thread (a hash takes tens of milliseconds of CPU). Login attempts
are rate limited per client IP and per account (credential stuffing), with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Annotated, Any

import ua_parser
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Receive, Scope, Send

from redkit.errors import AmbiguousSessionPrefix, InvalidInput, SessionNotFound
from redkit.platform.caching import invalidate, projects_tag, user_tag
from redkit.platform.db import Database, StoredText, User, UserType, row_id
from redkit.sessions.middleware import RequestSession, SessionMiddleware, current_session
from redkit.sessions.store import SessionInfo

__all__ = [
    "LateMiddleware",
    "create_user",
    "hash_password",
    "install_auth",
    "password_problem",
    "session_middleware",
    "session_signing_key",
]

_HASHER = PasswordHasher()
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,188}\.[^@\s.]{2,63}")
MIN_PASSWORD = 10
# A few of the most common passwords (long enough to pass the length check); a real
# deployment adds a breached-password list.
_COMMON = {
    "password123", "1234567890", "qwertyuiop", "password1234", "iloveyou123", "letmein123",
    "administrator", "welcome123", "0123456789", "abcdefghij",
}  # fmt: skip
# An argon2 hash of a random password: verified against when the e-mail is unknown, so that
# "no such user" costs the same time as "wrong password".
_DUMMY_HASH = _HASHER.hash("redkit-no-such-user")


def session_signing_key(secret: str) -> bytes:
    """The session cookies' HMAC key, derived from the platform secret (same in every process)."""
    return hmac.new(secret.encode(), b"redkit-platform session cookie v1", hashlib.sha256).digest()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


async def _verify(stored: str, password: str) -> bool:
    def check() -> bool:
        try:
            return _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def password_problem(password: str, email: str) -> str | None:
    """Why ``password`` is too weak, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(set(password)) < 4:
        return "a password needs more than three different characters"
    lowered = password.lower()
    if lowered in _COMMON or lowered == email.lower() or lowered == email.split("@")[0].lower():
        return "that password is too easy to guess"
    return None


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise HTTPException(422, detail="not an e-mail address")
    return email


async def create_user(
    db: Database, email: str, password: str, name: str, kind: UserType = UserType.user
) -> User:
    """Insert a user (one transaction); IntegrityError if the e-mail exists."""
    hashed = await hash_password(password)
    async with db.transaction() as tx:
        user = User(email=email, name=name, password_hash=hashed, type=kind)
        tx.add(user)
        await tx.flush()
    return user


# User IDs are uuid4 hex (db._new_id); anything else names no user, without a query. Exact, not
# cut to length: the gateway tags the cached page with the ID as sent, so two spellings of one
# user would be two entries, and a write would invalidate one of them only.
_USER_ID = re.compile(r"[0-9a-f]{32}")


def public_user_json(user: User) -> dict[str, Any]:
    """What any signed-in user may see of another: the gateway shares this page between
    every caller, so no e-mail, nothing private."""
    return {
        "id": user.id,
        "name": user.name,
        "type": user.type.value,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "type": user.type.value,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


class LateMiddleware:
    """An ASGI middleware built on the first request, once the lifespan has connected redkit:
    ``build(app, platform_state)`` makes the real one (a SessionMiddleware needs its store,
    which needs the connection the lifespan opens)."""

    def __init__(self, app: ASGIApp, /, build: Callable[[ASGIApp, Any], ASGIApp]) -> None:
        self.app = app
        self.build = build
        self._inner: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._inner is None:
            self._inner = self.build(self.app, scope["app"].state.platform)
        await self._inner(scope, receive, send)


def session_middleware(secure: bool, secret: str) -> Callable[[ASGIApp, Any], ASGIApp]:
    """The builder of the platform's SessionMiddleware (same cookie everywhere)."""

    def build(app: ASGIApp, state: Any) -> ASGIApp:
        return SessionMiddleware(
            app, state.session_store, secure=secure, signing_key=session_signing_key(secret)
        )

    return build


CurrentSession = Annotated[RequestSession, Depends(current_session)]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: StoredText = Field(max_length=254)
    password: str = Field(max_length=1024)  # hashed, never stored as given
    name: StoredText = Field(min_length=1, max_length=200)


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: StoredText = Field(max_length=254)
    password: str = Field(max_length=1024)


class UserTypeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: UserType


def device_of(user_agent: str | None) -> str:
    """A short name of the client a session was made from: "Firefox 120 on Linux"; the user
    agent as sent (cut) when ua-parser knows nothing of it. The store caps user agents at 512
    characters, which also bounds the parser's work on an attacker's string."""
    if not user_agent:
        return "unknown device"
    parsed = ua_parser.parse(user_agent)
    parts: list[str] = []
    if parsed.user_agent is not None:
        browser = parsed.user_agent
        parts.append(f"{browser.family} {browser.major}" if browser.major else browser.family)
    if parsed.os is not None and parsed.os.family != "Other":
        parts.append(f"on {parsed.os.family}")
    if parsed.device is not None and parsed.device.family not in ("Other", "Spider"):
        parts.append(f"({parsed.device.family})")
    return " ".join(parts) if parts else user_agent[:80]


def session_json(info: SessionInfo, current: bool) -> dict[str, Any]:
    """One session as ``GET /auth/sessions`` shows it: what a user needs to recognise it."""
    return {**info.as_dict(), "device": device_of(info.user_agent), "current": current}


def _too_many(retry_after: float) -> JSONResponse:
    seconds = max(1, int(retry_after + 0.999))
    return JSONResponse(
        {"detail": "too many login attempts; retry later", "retry_after": seconds},
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )


def install_auth(app: FastAPI) -> None:
    """Add the auth routes to ``app`` (its lifespan sets ``app.state.platform``)."""
    router = APIRouter()

    def state(request: Request) -> Any:
        return request.app.state.platform

    @router.post("/auth/register", status_code=201)
    async def register(body: RegisterIn, request: Request) -> dict[str, Any]:
        st = state(request)
        email = normalise_email(body.email)
        problem = password_problem(body.password, email)
        if problem:
            raise HTTPException(422, detail=problem)
        try:
            user = await create_user(st.db, email, body.password, body.name.strip())
        except IntegrityError:
            raise HTTPException(409, detail="an account with that e-mail exists") from None
        await st.rk.queue("email").enqueue(
            "email",
            {
                "to": user.email,
                "subject": "Welcome to the redkit platform",
                "text": f"Hello {user.name},\n\nyour account is ready.\n",
            },
        )
        return user_json(user)

    @router.post("/auth/login", response_model=None)
    async def login(
        body: LoginIn, request: Request, rs: CurrentSession
    ) -> dict[str, Any] | JSONResponse:
        st = state(request)
        email = body.email.strip().lower()
        ip = request.client.host if request.client else "unknown"
        account = hashlib.sha256(email.encode()).hexdigest()[:32]
        by_ip, by_account = await asyncio.gather(
            st.login_ip_limiter.hit(f"ip:{ip}"), st.login_account_limiter.hit(f"acct:{account}")
        )
        if not by_ip.allowed or not by_account.allowed:
            return _too_many(max(by_ip.retry_after, by_account.retry_after))
        async with st.db.reading() as session:
            user = await session.scalar(select(User).where(User.email == email))
        ok = await _verify(user.password_hash if user else _DUMMY_HASH, body.password)
        if user is None or not ok:
            raise HTTPException(401, detail="wrong e-mail or password")
        # The session carries the type read above, before the password check (tens of ms). A
        # type change that committed and revoked every session of the user meanwhile would miss
        # this one (a demoted admin would keep an admin session): read the user again once the
        # session exists; a change since is seen here, or its revocation comes after and ends
        # the session. A changed type signs in again with the new one (login ends the previous).
        for _ in range(3):
            new = await rs.login(user.id, {"type": user.type.value, "email": user.email})
            async with st.db.reading() as session:
                again = await session.get(User, user.id)
            if again is None:
                await rs.logout()
                raise HTTPException(401, detail="wrong e-mail or password")
            if again.type is user.type:
                return {"token": new.id, "user": user_json(again)}
            user = again
        await rs.logout()
        raise HTTPException(409, detail="the account is being changed: sign in again")

    @router.post("/auth/logout")
    async def logout(rs: CurrentSession) -> dict[str, Any]:
        return {"ended": await rs.logout()}

    @router.post("/auth/logout-all")
    async def logout_all(rs: CurrentSession) -> dict[str, Any]:
        if rs.session is None:
            raise HTTPException(401, detail="sign in first: no live session")
        return {"ended": await rs.logout_everywhere()}

    @router.get("/auth/sessions")
    async def my_sessions(request: Request, rs: CurrentSession) -> dict[str, Any]:
        if rs.session is None:
            raise HTTPException(401, detail="sign in first: no live session")
        infos = await state(request).session_store.list(rs.session.user_id)
        return {
            "sessions": [
                session_json(info, info.id_prefix == rs.session.id_prefix) for info in infos
            ]
        }

    @router.delete("/auth/sessions/{prefix}")
    async def end_session(prefix: str, request: Request, rs: CurrentSession) -> dict[str, Any]:
        if rs.session is None:
            raise HTTPException(401, detail="sign in first: no live session")
        try:
            # Searched among the caller's own sessions only: another user's prefix is a 404.
            info = await state(request).session_store.revoke_prefix(rs.session.user_id, prefix)
        except AmbiguousSessionPrefix as exc:
            raise HTTPException(409, detail=str(exc)) from None
        except InvalidInput as exc:
            raise HTTPException(400, detail=str(exc)) from None
        except SessionNotFound:
            raise HTTPException(404, detail="you have no live session with that ID") from None
        current = info.id_prefix == rs.session.id_prefix
        if current:
            await rs.logout()  # already ended: this clears the cookie of the request
        return {"ended": session_json(info, current)}

    @router.get("/api/me")
    async def me(request: Request, rs: CurrentSession) -> dict[str, Any]:
        if rs.session is None:
            raise HTTPException(401, detail="sign in first: no live session")
        async with state(request).db.reading() as session:
            user = await session.get(User, rs.session.user_id)
        if user is None:
            raise HTTPException(401, detail="this account no longer exists")
        return user_json(user)

    @router.get("/api/users/{user_id}")
    async def public_user(user_id: str, request: Request, rs: CurrentSession) -> dict[str, Any]:
        # Signed-in callers only: the platform is no public directory of its users' names
        # (IDs travel in member lists, URLs and logs, so an ID is no secret), and an anonymous
        # caller could otherwise probe which IDs exist. The page is the same for every
        # signed-in caller, so the gateway shares one cached entry among them.
        if rs.session is None:
            raise HTTPException(401, detail="sign in first: no live session")
        if not _USER_ID.fullmatch(user_id):
            raise HTTPException(404, detail="no such user")
        async with state(request).db.reading() as session:
            user = await session.get(User, user_id)
        if user is None:
            raise HTTPException(404, detail="no such user")
        return public_user_json(user)

    @router.patch("/api/admin/users/{user_id}")
    async def set_user_type(
        user_id: str, body: UserTypeIn, request: Request, rs: CurrentSession
    ) -> dict[str, Any]:
        st = state(request)
        if rs.session is None:
            raise HTTPException(401, detail="sign in first: no live session")
        async with st.db.transaction() as tx:
            caller = await tx.get(User, rs.session.user_id)
            if caller is None or caller.type is not UserType.admin:
                raise HTTPException(403, detail="admins only")
            user = await tx.get(User, row_id(user_id))
            if user is None:
                raise HTTPException(404, detail="no such user")
            changed = user.type is not body.type
            user.type = body.type
        if changed:
            # Sessions carry the type the gateway limits by: the user signs in again to get the
            # new one (and a demoted admin keeps no admin session).
            await st.session_store.revoke_all(user.id)
            # Its public page shows the type; its project lists change when it becomes or
            # stops being an admin (admins list every project).
            await invalidate(st.rk, user_tag(user.id), projects_tag(user.id))
        return user_json(user)

    app.include_router(router)


async def ensure_admin(db: Database, email: str, password: str | None) -> tuple[str, str | None]:
    """The first admin: created unless an admin exists. Returns (email, the password if it
    was generated here, to print once)."""
    import secrets

    async with db.reading() as session:
        admins = await session.scalar(
            select(func.count()).select_from(User).where(User.type == UserType.admin)
        )
    if admins:
        return email, None
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    try:
        await create_user(db, email.lower(), password, "Administrator", UserType.admin)
    except IntegrityError:
        async with db.transaction() as tx:  # the e-mail exists as a plain user: promote it
            user = await tx.scalar(select(User).where(User.email == email.lower()))
            if user is not None:
                user.type = UserType.admin
        generated = None
    return email, generated
