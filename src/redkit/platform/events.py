"""The gateway's notifications: ``/events`` (SSE), ``/ws`` (WebSocket), ``POST /api/admin/alerts``.

Channels (every publisher of the platform uses :func:`platform_bus` and these names):

- ``system:alert``: admins' announcements (``POST /api/admin/alerts {message}``), to every
  signed-in user. Anonymous callers get no stream at all (401): an open stream holds a
  connection and a Redis subscription, which a signed-out client should not get for free,
  and an alert may say things about the platform that only its users need to know.
- ``project:created``: a new project (``{id, name, by}``), to admins only.
- ``project:<project id>:deployments``: the project's deployment status changes
  (``{deployment_id, project_id, status, attempts}``), to the project's members and admins.
  One channel per project, so that a grant is an exact comparison: a channel or pattern is a
  project's only if it names ``project:<id>:`` in full, and a project id (32 hex digits) never
  contains ``:``, so no name of one project starts with another's.

``GET /events`` (and ``/ws``) without ``channel``/``pattern`` parameters subscribes the caller
to everything it may see: ``system:alert`` and each of its projects' deployment channels (by
name, so that ``Last-Event-ID`` resumes each exactly); for an admin ``system:alert``,
``project:created`` and the pattern ``project:*`` (every project, present and future; a
pattern resumes the channels it has already delivered from, so a project whose first event
came while an admin was away is delivered from its next event on). With parameters, the
caller gets those it is granted (403 if none). Patterns are granted by their literal start
(:func:`~redkit.notify.pattern_prefix`): ``project:<id>:*`` to a member of that project,
``project:*`` and narrower to admins; ``*`` to no one.

Refusals are JSON ``{"error", "message"}`` (the WebSocket's are the handshake's HTTP
status): 401 without a live session, 403 when nothing asked for is granted, 413 when the
default subscription would name more than 256 channels (a member of more than 255 projects
names the ones it wants), 429 when the user already holds :data:`MAX_STREAMS_PER_USER` open
streams on this gateway process (each holds a connection and a subscription: without a bound,
one account's 100 requests a minute would pile up streams for as long as it likes), 503 when
the database cannot be read.

**Membership is checked when the stream opens**, from the platform's PostgreSQL (the source
of truth, one query), and again every :data:`RECHECK` seconds while it is open: a member
removed from a project (or whose project is deleted), or whose session ended (logout,
logout-all, a changed user type), has the stream ended within about that time (SSE: an
``event: end`` frame, then the end of the stream; WebSocket: close code 1008). Until that
check, such a stream may still carry the project's events for those few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from redkit import Redkit
from redkit.notify import NotificationBus, pattern_prefix
from redkit.notify.web import sse_endpoint, websocket_endpoint
from redkit.platform.db import Membership, User, UserType
from redkit.sessions.middleware import current_session

__all__ = [
    "ALERTS",
    "PROJECT_CREATED",
    "RECHECK",
    "Grants",
    "deployment_channel",
    "install_events",
    "platform_bus",
]

log = logging.getLogger("redkit.platform")

ALERTS = "system:alert"
PROJECT_CREATED = "project:created"
RECHECK = 10.0
"""Seconds between the checks of an open stream's session and memberships (also the SSE
heartbeat, so an idle stream is checked as often as a busy one)."""
MAX_ALERT_BODY = 16 * 1024
MAX_NAMES = 256  # the bus's most channels + patterns per subscription
MAX_STREAMS_PER_USER = 20
"""Open ``/events`` and ``/ws`` streams one user may hold on one gateway process at once
(each holds a connection, a task and a subscription's queue); the next is refused with 429."""
_GRANTS_KEY = "redkit.platform.grants"


def deployment_channel(project_id: str) -> str:
    """The channel of ``project_id``'s deployment events."""
    return f"project:{project_id}:deployments"


def platform_bus(rk: Redkit) -> NotificationBus:
    """The bus every part of the platform publishes and subscribes with (same options, so a
    publisher and the gateway agree): 100 events of history per channel, kept 7 days after a
    channel's last event (bounded: a deleted project's channel goes away by itself), and
    classic publishes too on a Cluster so the admins' ``project:*`` pattern works there."""
    return rk.notifications(
        history=100, history_ttl=7 * 24 * 3600, cluster_patterns=True, max_channels=MAX_NAMES
    )


def _literal(pattern: str) -> str | None:
    """The one channel ``pattern`` matches if it has no wildcard (escapes resolved), else None."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch in "*?[":
            return None
        if ch == "\\":
            i += 1
            ch = pattern[i]  # check_pattern refused a trailing lone backslash already
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Grants:
    """What one user may receive, read from the database when a stream opens."""

    user_id: str
    admin: bool
    projects: frozenset[str]

    def channel(self, name: str) -> bool:
        if name == ALERTS:
            return True
        if name == PROJECT_CREATED:
            return self.admin
        head, _, rest = name.partition(":")
        project, sep, kind = rest.partition(":")
        if head != "project" or not sep or kind != "deployments" or not project:
            return False
        return self.admin or project in self.projects

    def pattern(self, pattern: str) -> bool:
        only = _literal(pattern)
        if only is not None:
            return self.channel(only)
        prefix = pattern_prefix(pattern)
        if self.admin and prefix.startswith("project:"):
            return True
        # The separator after the id is what makes it exact: "project:<id>*" also matches
        # "project:<id>0:...", which would be another project's if ids grew.
        head, _, rest = prefix.partition(":")
        project, sep, _ = rest.partition(":")
        return head == "project" and bool(sep) and project in self.projects

    def everything(self) -> tuple[list[str], list[str]]:
        """The channels and patterns of a ``GET /events`` that names none."""
        if self.admin:
            return [ALERTS, PROJECT_CREATED], ["project:*"]
        return [ALERTS, *(deployment_channel(p) for p in sorted(self.projects))], []


async def load_grants(platform: Any, user_id: str) -> Grants | None:
    """The grants of ``user_id`` (None: no such user), from the platform database."""
    async with platform.db.reading() as session:
        user = await session.get(User, user_id)
        if user is None:
            return None
        admin = user.type is UserType.admin
        projects: frozenset[str] = frozenset()
        if not admin:
            rows = await session.scalars(
                select(Membership.project_id).where(Membership.user_id == user_id)
            )
            projects = frozenset(rows.all())
    return Grants(user_id, admin, projects)


async def _grants(conn: HTTPConnection) -> Grants | None:
    """The connection's grants, read once per connection (both hooks and the default
    subscription ask)."""
    if _GRANTS_KEY in conn.scope:
        cached: Grants | None = conn.scope[_GRANTS_KEY]
        return cached
    session = current_session(conn).session
    grants = None
    if session is not None:
        grants = await load_grants(conn.scope["app"].state.platform, session.user_id)
    conn.scope[_GRANTS_KEY] = grants
    return grants


async def authorize(conn: HTTPConnection, channels: list[str]) -> list[str]:
    grants = await _grants(conn)
    granted = [c for c in channels if grants is not None and grants.channel(c)]
    conn.scope["redkit.platform.channels"] = granted
    return granted


async def authorize_patterns(conn: HTTPConnection, patterns: list[str]) -> list[str]:
    grants = await _grants(conn)
    granted = [p for p in patterns if grants is not None and grants.pattern(p)]
    conn.scope["redkit.platform.patterns"] = granted
    return granted


async def still_granted(scope: dict[str, Any]) -> bool:
    """Whether the stream opened with ``scope`` may go on: its session is live and every
    channel and pattern it was granted still is."""
    session = current_session(HTTPConnection(scope)).session
    if session is None:
        return False
    platform = scope["app"].state.platform
    live = await platform.session_store.get(session.id)
    if live is None:
        return False
    grants = await load_grants(platform, live.user_id)
    if grants is None:
        return False
    return all(grants.channel(c) for c in scope.get("redkit.platform.channels", ())) and all(
        grants.pattern(p) for p in scope.get("redkit.platform.patterns", ())
    )


class _StreamCount:
    """The open streams of each user in this process. Bounded: one entry per user with an
    open stream (an entry goes when its last stream ends), each at most
    :data:`MAX_STREAMS_PER_USER`."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def take(self, user_id: str) -> bool:
        held = self.open.get(user_id, 0)
        if held >= MAX_STREAMS_PER_USER:
            return False
        self.open[user_id] = held + 1
        return True

    def give_back(self, user_id: str) -> None:
        held = self.open.get(user_id, 0) - 1
        if held > 0:
            self.open[user_id] = held
        else:
            self.open.pop(user_id, None)


class _Held(Response):
    """``inner`` sent as it is; ``release`` runs once it is over, however it ends (a client
    that leaves before the first byte included: the body's own ``finally`` would never run)."""

    def __init__(self, inner: Response, release: Callable[[], None]) -> None:
        self.inner = inner
        self.release = release
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.release()


def _user_of(conn: HTTPConnection) -> str:
    session = current_session(conn).session
    assert session is not None  # _prepared refused the request otherwise
    return session.user_id


def _too_many_streams() -> JSONResponse:
    return _refusal(
        429,
        "too_many_streams",
        f"at most {MAX_STREAMS_PER_USER} open event streams per user: close one first",
    )


def _refusal(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


async def _prepared(conn: HTTPConnection) -> dict[str, Any] | Response:
    """The scope the notify endpoint gets (with the default channels filled in when the
    request names none), or the refusal to send instead."""
    if current_session(conn).session is None:
        return _refusal(401, "unauthorized", "sign in first: events are for signed-in users")
    try:
        grants = await _grants(conn)
    except (SQLAlchemyError, OSError):
        log.warning("events: the platform database is unreachable", exc_info=True)
        return _refusal(503, "unavailable", "the platform database is unreachable; retry")
    if grants is None:
        return _refusal(401, "unauthorized", "this account no longer exists")
    # A copy: the notify endpoint gets the default query string; the hooks' notes of what
    # they granted land in it, where the rechecks read them.
    scope = dict(conn.scope)
    query = conn.query_params
    if not query.getlist("channel") and not query.getlist("pattern"):
        channels, patterns = grants.everything()
        if len(channels) + len(patterns) > MAX_NAMES:
            return _refusal(
                413,
                "too_many_channels",
                f"you are a member of more than {MAX_NAMES - 1} projects: name the channels "
                "you want (?channel=project:<id>:deployments&channel=system:alert)",
            )
        extra = [("channel", c) for c in channels] + [("pattern", p) for p in patterns]
        scope["query_string"] = urlencode([*query.multi_items(), *extra]).encode()
    return scope


_END = orjson.dumps(
    {"error": "ended", "message": "the session ended or a subscribed project is no longer yours"}
)


def _rechecked(scope: dict[str, Any], body: AsyncIterable[Any]) -> AsyncIterator[Any]:
    async def stream() -> AsyncIterator[Any]:
        checked = time.monotonic()
        try:
            async for chunk in body:
                yield chunk
                if time.monotonic() - checked < RECHECK:
                    continue
                checked = time.monotonic()
                try:
                    ok = await still_granted(scope)
                except Exception:  # the store or the database is down: fail closed
                    log.warning("events: the recheck of an open stream failed", exc_info=True)
                    ok = False
                if not ok:
                    yield b"event: end\ndata: " + _END + b"\n\n"
                    return
        finally:
            closing = getattr(body, "aclose", None)
            if closing is not None:
                await closing()

    return stream()


def _routes(bus: Callable[[HTTPConnection], NotificationBus]) -> list[Route | WebSocketRoute]:
    hooks: dict[str, Any] = {"authorize": authorize, "authorize_patterns": authorize_patterns}
    sse = sse_endpoint(bus, heartbeat=RECHECK, **hooks)
    ws = websocket_endpoint(bus, **hooks)
    streams = _StreamCount()

    async def events(request: Request) -> Response:
        scope = await _prepared(request)
        if isinstance(scope, Response):
            return scope
        user_id = _user_of(request)
        if not streams.take(user_id):
            return _too_many_streams()
        try:
            response = await sse(Request(scope, request.receive))
        except BaseException:
            streams.give_back(user_id)
            raise
        if isinstance(response, StreamingResponse):
            response.body_iterator = _rechecked(scope, response.body_iterator)
        return _Held(response, lambda: streams.give_back(user_id))

    async def websocket(socket: WebSocket) -> None:
        scope = await _prepared(socket)
        if isinstance(scope, Response):
            if "websocket.http.response" in socket.scope.get("extensions", {}):
                await socket.send_denial_response(scope)
            else:
                await socket.close(code=1008, reason="sign in first")
            return
        user_id = _user_of(socket)
        if not streams.take(user_id):
            refusal = _too_many_streams()
            if "websocket.http.response" in socket.scope.get("extensions", {}):
                await socket.send_denial_response(refusal)
            else:
                await socket.close(code=1008, reason="too many open streams")
            return
        try:
            inner = WebSocket(scope, socket.receive, socket.send)
            await _watched(scope, inner, ws(inner))
        finally:
            streams.give_back(user_id)

    return [Route("/events", events, methods=["GET"]), WebSocketRoute("/ws", websocket)]


async def _watched(scope: dict[str, Any], socket: WebSocket, serve: Awaitable[None]) -> None:
    """Serve the socket; end it (1008) once :func:`still_granted` says no."""
    task = asyncio.ensure_future(serve)

    async def watch() -> None:
        while True:
            await asyncio.sleep(RECHECK)
            try:
                ok = await still_granted(scope)
            except Exception:  # fail closed, as for SSE
                log.warning("events: the recheck of an open WebSocket failed", exc_info=True)
                ok = False
            if not ok:
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for running in (task, watcher):
            running.cancel()
        for running in (task, watcher):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running
    if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
        with contextlib.suppress(Exception):
            await socket.close(code=1008, reason="session ended or project no longer yours")


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=2000)


def install_events(app: FastAPI, bus_of: Callable[[Any], NotificationBus]) -> None:
    """Add ``/events``, ``/ws`` and ``POST /api/admin/alerts`` to the gateway ``app``
    (before its catch-all proxy route). ``bus_of(platform_state)`` is the bus."""
    holder: dict[str, NotificationBus] = {}

    def bus(conn: HTTPConnection) -> NotificationBus:
        if "bus" not in holder:
            holder["bus"] = bus_of(conn.scope["app"].state.platform)
        return holder["bus"]

    app.router.routes.extend(_routes(bus))

    @app.post(
        "/api/admin/alerts",
        status_code=201,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": AlertIn.model_json_schema()}},
            }
        },
    )
    async def alert(request: Request) -> JSONResponse:
        """Publish ``system:alert`` ``{message}`` to every signed-in user (admins only)."""
        session = current_session(request).session
        if session is None:
            return JSONResponse({"detail": "sign in first: no live session"}, status_code=401)
        platform = request.app.state.platform
        try:
            async with platform.db.reading() as db:
                user = await db.get(User, session.user_id)
        except (SQLAlchemyError, OSError):
            log.warning("alerts: the platform database is unreachable", exc_info=True)
            detail = "the platform database is unreachable; retry"
            return JSONResponse({"detail": detail}, status_code=503)
        if user is None or user.type is not UserType.admin:
            return JSONResponse({"detail": "admins only"}, status_code=403)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_ALERT_BODY:
                detail = f"an alert's body is at most {MAX_ALERT_BODY} bytes"
                return JSONResponse({"detail": detail}, status_code=413)
        try:
            parsed = AlertIn.model_validate_json(bytes(body))
        except ValidationError as exc:
            errors = orjson.loads(exc.json(include_url=False, include_input=False))
            return JSONResponse({"detail": errors}, status_code=422)
        data = {"message": parsed.message}
        event_id = await bus(request).publish(ALERTS, data)
        return JSONResponse({"id": event_id, "channel": ALERTS, "data": data}, status_code=201)
