"""The gateway's dashboard at ``/``, its Platform view, and ``/metrics``.

- **Who gets in.** The dashboard (:func:`redkit.dashboard.dashboard_app`) is granted to the
  platform's admins only: a live session (the gateway's cookie or a bearer token) whose type
  is ``admin``. A browser that is not signed in gets a sign-in page (a form whose script posts
  JSON to ``/auth/login``, same origin, then reloads: no credentials in any URL, no redirect
  target to abuse, and a JSON login cannot be forged by another site's form); a signed-in
  user who is not an admin gets a 403 page saying so. Clients that ask for something else
  than HTML (``Accept: application/json``, an event stream, a POST) get JSON (401 / 403).
- **Routing.** The dashboard answers only its own first path segments (``/``, ``/jobs``,
  ``/platform``, ``/static``, ...: :data:`redkit.dashboard.views.RESERVED` and the views'
  keys); every other path (``/healthz``, ``/auth/...``, ``/api/...``, ``/events``) keeps its
  own route, whatever order the routes were added in.
- **The Platform view** (``/platform``): users (search by e-mail or id) with their sessions
  (revoke one, revoke all), projects, the latest deployments with status and log, and the
  mail sink's messages. It is a :class:`redkit.dashboard.View`: the dashboard library knows
  nothing of the platform.
- **/metrics**: the Prometheus text of :func:`redkit.dashboard.metrics.metrics_app` plus the
  gateway's own ``redkit_gateway_requests_total{route, method, status}`` and
  ``redkit_gateway_request_duration_seconds{route}``. Never anonymous: it answers an admin's
  session (cookie or bearer), or ``Authorization: Bearer $REDKIT_METRICS_TOKEN`` (a scraper's
  token, at least 24 characters, compared in constant time); anyone else gets 401/403.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from fastapi import FastAPI
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import Counter, Histogram
from sqlalchemy import func, or_, select
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from redkit.dashboard import Role, View, ViewContext, Viewer, dashboard_app
from redkit.dashboard.metrics import metrics_app
from redkit.dashboard.views import RESERVED, ViewAction, when
from redkit.errors import InvalidInput, SessionNotFound
from redkit.platform.config import PlatformConfig
from redkit.platform.db import Deployment, Membership, Project, User
from redkit.platform.gateway import ROUTES
from redkit.platform.mail import received
from redkit.sessions.middleware import current_session
from redkit.sessions.store import Session

__all__ = ["GatewayMetrics", "install_console", "platform_view"]

PLATFORM_VIEW = "platform"
DASHBOARD_SEGMENTS = frozenset({"", *RESERVED, PLATFORM_VIEW, "signin.js"})
"""The first path segments the gateway's dashboard answers (``""``: ``/`` itself)."""
PAGE_USERS = 50
PAGE_PROJECTS = 50
PAGE_DEPLOYMENTS = 20
PAGE_MAIL = 20
_RECHECK = "redkit.platform.console.checked"

_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def is_admin(session: Session | None) -> bool:
    return session is not None and session.data.get("type") == "admin"


def _state(conn: HTTPConnection) -> Any:
    return conn.app.state.platform


async def admin_viewer(conn: HTTPConnection) -> Viewer | None:
    """The dashboard's ``auth``: an admin session, or nobody.

    The first call of a request trusts the session the gateway's middleware resolved; a
    later call on the same request (an open live stream asks again at each keep-alive) reads
    the store again, so a revoked session's tab stops within a keep-alive."""
    session = current_session(conn).session
    if not is_admin(session):
        return None
    assert session is not None
    if conn.scope.get(_RECHECK):
        session = await _state(conn).session_store.get(session.id)
        if not is_admin(session):
            return None
        assert session is not None
    conn.scope[_RECHECK] = True
    return Viewer(Role.ADMIN, str(session.data.get("email") or session.user_id))


# -- the sign-in and refusal pages ---------------------------------------------------------

# The pages' templates ship in the wheel beside this module; everything is escaped.
_env = Environment(
    loader=PackageLoader("redkit.platform", "templates"), autoescape=select_autoescape(default=True)
)
_env.globals["when"] = when

_GATE = _env.get_template("gate.html")

# Same origin, JSON body (a form on another site cannot send one), credentials never in a URL;
# on success the page reloads itself, so there is no redirect target to abuse.
SIGNIN_JS = """"use strict";
(() => {
  const form = document.getElementById("signin");
  const error = document.getElementById("signin-error");
  const show = (text) => { error.textContent = text; error.hidden = false; };
  if (form) form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const data = new FormData(form);
    let response;
    try {
      response = await fetch("/auth/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: data.get("email"), password: data.get("password") }),
      });
    } catch (e) { show("The platform did not answer; try again."); return; }
    if (response.ok) { location.reload(); return; }
    let reply = {};
    try { reply = await response.json(); } catch (e) { reply = {}; }
    const detail = typeof reply.detail === "string" ? reply.detail : "";
    if (response.status === 429) show(detail || "Too many attempts: wait a minute.");
    else show(detail || `Refused (${response.status}).`);
  });
  const out = document.getElementById("signout");
  if (out) out.addEventListener("click", async () => {
    try {
      await fetch("/auth/logout", { method: "POST", credentials: "same-origin" });
    } finally { location.reload(); }
  });
})();
"""


def _wants_html(scope: Scope) -> bool:
    """A page, not data: a browser's navigation, or a client that takes anything (curl)."""
    accept = HTTPConnection(scope).headers.get("accept", "").strip()
    return scope.get("method") == "GET" and ("text/html" in accept or accept in ("", "*/*"))


class _Gate:
    """In front of the dashboard: the sign-in page, the 403 page, ``/signin.js``; the rest
    goes to the dashboard (built on the first request: it needs the lifespan's ``rk``)."""

    def __init__(self, build: Callable[[Any], ASGIApp]) -> None:
        self.build = build
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if path == "/signin.js":
            response: Response = Response(
                SIGNIN_JS,
                media_type="text/javascript",
                headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
            )
            await response(scope, receive, send)
            return
        session = current_session(HTTPConnection(scope)).session
        if not is_admin(session) and not path.startswith("/static/"):
            if _wants_html(scope):
                response = self.refusal(session)
                await response(scope, receive, send)
                return
            if session is None:
                response = JSONResponse(
                    {"detail": "sign in first: the dashboard is for administrators"}, 401
                )
                await response(scope, receive, send)
                return
        if self.app is None:
            self.app = self.build(scope["app"].state.platform)
        await self.app(scope, receive, send)

    @staticmethod
    def refusal(session: Session | None) -> HTMLResponse:
        if session is None:
            body = _GATE.render(title="Sign in", signed_in=False)
            return HTMLResponse(body, 401, headers=_HEADERS)
        body = _GATE.render(
            title="Not allowed",
            signed_in=True,
            who=session.data.get("email") or session.user_id,
            kind=session.data.get("type", "user"),
        )
        return HTMLResponse(body, 403, headers=_HEADERS)


class _Segments(BaseRoute):
    """A route that takes the paths whose first segment is one of ``segments`` (``""`` is
    ``/`` itself) and leaves every other path to the routes after it."""

    def __init__(self, app: ASGIApp, segments: frozenset[str]) -> None:
        self.app = app
        self.segments = segments

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        first = str(scope.get("path", "/")).lstrip("/").split("/", 1)[0]
        return (Match.FULL, {}) if first in self.segments else (Match.NONE, {})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


# -- the Platform view ---------------------------------------------------------------------

_VIEW = _env.get_template("platform.html")


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def platform_view(st: Any) -> View:
    """The Platform view of the dashboard (``/platform``), over the gateway's state ``st``
    (its database, session store and ``rk``): the platform's tables, the users' sessions
    (revoke one, revoke all) and the mail sink's history."""

    async def render(ctx: ViewContext) -> str:
        q = ctx.request.query_params.get("q", "").strip()[:254]
        picked_id = ctx.request.query_params.get("user", "").strip()[:32]
        async with st.db.reading() as tx:
            users_q = select(User).order_by(User.created_at.desc(), User.id)
            if q:
                users_q = users_q.where(
                    or_(User.id == q, User.email.ilike(_like(q.lower()), escape="\\"))
                )
            users = list((await tx.scalars(users_q.limit(PAGE_USERS + 1))).all())
            picked = await tx.get(User, picked_id) if picked_id else None
            members = (
                select(func.count())
                .select_from(Membership)
                .where(Membership.project_id == Project.id)
                .scalar_subquery()
            )
            projects = (
                await tx.execute(
                    select(Project, members, User.email)
                    .outerjoin(User, User.id == Project.created_by)
                    .order_by(Project.created_at.desc(), Project.id)
                    .limit(PAGE_PROJECTS)
                )
            ).all()
            deployments = (
                await tx.execute(
                    select(Deployment, Project.name)
                    .join(Project, Project.id == Deployment.project_id)
                    .order_by(Deployment.created_at.desc(), Deployment.id)
                    .limit(PAGE_DEPLOYMENTS)
                )
            ).all()
            counts = {
                "users": await tx.scalar(select(func.count()).select_from(User)),
                "projects": await tx.scalar(select(func.count()).select_from(Project)),
                "deployments": await tx.scalar(select(func.count()).select_from(Deployment)),
            }
        sessions = await st.session_store.list(picked.id) if picked is not None else []
        mail = await received(st.rk, PAGE_MAIL)
        return _VIEW.render(
            base=ctx.base,
            admin=ctx.admin,
            q=q,
            users=users[:PAGE_USERS],
            more_users=len(users) > PAGE_USERS,
            picked=picked,
            sessions=sessions,
            can_revoke_one=hasattr(st.session_store, "revoke_prefix"),
            projects=projects,
            deployments=deployments,
            counts=counts,
            mail=mail,
        )

    return View(PLATFORM_VIEW, "Platform", render, _actions(st.session_store))


def _user_of(body: dict[str, Any]) -> str:
    user = body.get("user")
    if not isinstance(user, str) or not user.strip() or len(user) > 32:
        raise InvalidInput("name the user (its id) whose sessions to revoke")
    return user.strip()


def _actions(store: Any) -> dict[str, ViewAction]:
    async def revoke_all(body: dict[str, Any], viewer: Viewer) -> tuple[str, str]:
        user = _user_of(body)
        n = await store.revoke_all(user)
        return user, f"{n} session(s) revoked"

    async def revoke_session(body: dict[str, Any], viewer: Viewer) -> tuple[str, str]:
        user = _user_of(body)
        prefix = body.get("session")
        if not isinstance(prefix, str) or not prefix:
            raise InvalidInput("name the session (its id prefix, as listed)")
        # SessionStore.revoke_prefix (one script: finds the user's session by the prefix that
        # list() shows and ends it); a store without it offers no per-session button.
        revoke_prefix = getattr(store, "revoke_prefix", None)
        if revoke_prefix is None:
            raise HTTPException(501, "this SessionStore cannot revoke one session by prefix")
        try:
            await revoke_prefix(user, prefix)
        except SessionNotFound:
            raise HTTPException(404, "no live session of this user starts with that") from None
        return f"{user}/{prefix}", "session revoked"

    return {"revoke_all": revoke_all, "revoke_session": revoke_session}


# -- /metrics ------------------------------------------------------------------------------

GATEWAY_REQUESTS = Counter(
    "redkit_gateway_requests",
    "Requests the gateway answered, by route, method and status.",
    ["route", "method", "status"],
)
GATEWAY_LATENCY = Histogram(
    "redkit_gateway_request_duration_seconds",
    "Seconds from a request's arrival to the start of its answer, by route.",
    ["route"],
)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_OWN = frozenset({"/healthz", "/metrics", "/events", "/ws"})


def route_label(path: str, dashboard: frozenset[str]) -> str:
    """A bounded label for ``path``: the gateway's own paths, the proxy's route prefixes,
    ``dashboard``, or ``other`` (never the raw path: label values must stay few)."""
    if path in _OWN:
        return path
    for prefix, _service in ROUTES:
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return prefix
    if path.lstrip("/").split("/", 1)[0] in dashboard:
        return "dashboard"
    return "other"


class GatewayMetrics:
    """Counts every HTTP request the gateway answers and the time to its first byte
    (in-process counters: no Redis round trip)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.dashboard = DASHBOARD_SEGMENTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        route = route_label(str(scope.get("path", "")), self.dashboard)
        method = str(scope.get("method", ""))
        method = method if method in _METHODS else "other"
        status = "500"

        async def counted(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
                GATEWAY_LATENCY.labels(route).observe(time.perf_counter() - began)
                GATEWAY_REQUESTS.labels(route, method, status).inc()
            await send(message)

        await self.app(scope, receive, counted)


def metrics_reader(conn: HTTPConnection, token: str | None) -> int:
    """200 if this request may read /metrics, else the status to refuse it with."""
    if is_admin(current_session(conn).session):
        return 200
    sent = conn.headers.get("authorization", "")
    scheme, _, value = sent.partition(" ")
    if (
        token
        and scheme.lower() == "bearer"
        and hmac.compare_digest(value.strip().encode(), token.encode())
    ):
        return 200
    return 403 if current_session(conn).session is not None else 401


class _Metrics:
    def __init__(self, token: str | None) -> None:
        self.token = token
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = metrics_reader(HTTPConnection(scope), self.token)
        if status != 200:
            detail = (
                "admins only: sign in as an admin, or send the scraper's token "
                "(Authorization: Bearer $REDKIT_METRICS_TOKEN)"
            )
            headers = {"www-authenticate": 'Bearer realm="metrics"'} if status == 401 else {}
            await JSONResponse({"detail": detail}, status, headers=headers)(scope, receive, send)
            return
        if self.app is None:
            platform = scope["app"].state.platform
            self.app = metrics_app(platform.rk, sessions=platform.session_store)
        await self.app({**scope, "path": "/", "raw_path": b"/"}, receive, send)


# -- installing ----------------------------------------------------------------------------


def install_console(app: FastAPI, config: PlatformConfig) -> None:
    """Add the dashboard (at ``/``, admins only) and ``/metrics`` to the gateway ``app``.

    Call it before the proxy's catch-all route is added: these routes take only their own
    paths, and the proxy gets every other."""

    def build(state: Any) -> ASGIApp:
        return dashboard_app(
            state.rk,
            auth=admin_viewer,
            sessions=state.session_store,
            title="redkit platform",
            views=[platform_view(state)],
        )

    app.router.routes.append(_Segments(_Gate(build), DASHBOARD_SEGMENTS))
    metrics = cast(Callable[[Request], Awaitable[Response]], _Metrics(config.metrics_token))
    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
