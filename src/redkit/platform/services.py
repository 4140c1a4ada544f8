"""The platform's processes: one FastAPI app per role, each under uvicorn on its own port.

- ``gateway``: the only public port: ``/healthz`` (200 only when every part answers,
  else 503 naming the parts that do not), the dashboard at ``/`` (admins) and ``/metrics``
  (:mod:`.console`), and the proxy to the services (:mod:`.gateway`).
- ``auth`` and ``projects``: ``/healthz`` (their own Valkey and PostgreSQL).
- ``worker``: runs the queues ``deployment`` (first) and ``email``; its ``/healthz`` says
  whether the worker loop still runs.

``serve(role, port, config)`` runs one of them in the foreground until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

import redkit
from redkit import Redkit, RedkitError
from redkit.hosts import AllowedHosts
from redkit.platform.admin import install_admin
from redkit.platform.auth import LateMiddleware, install_auth, session_middleware
from redkit.platform.caching import gateway_cache_middleware
from redkit.platform.config import PlatformConfig
from redkit.platform.console import GatewayMetrics, install_console
from redkit.platform.db import Database
from redkit.platform.deployments import deploy_job, install_deployments
from redkit.platform.events import install_events, platform_bus
from redkit.platform.gateway import (
    KnownHosts,
    SameOriginWrites,
    install_openapi,
    install_proxy,
    tier_limits,
)
from redkit.platform.mail import SmtpTarget, email_job
from redkit.platform.projects import caller, install_projects
from redkit.platform.provision import Provisioner

__all__ = ["ROLES", "Role", "build_app", "serve"]

Role = Literal["gateway", "auth", "projects", "worker"]
ROLES: tuple[Role, ...] = ("gateway", "auth", "projects", "worker")
QUEUES = ("deployment", "email")  # in priority order: a worker drains deployments first
CHECK_TIMEOUT = 2.0

log = logging.getLogger("redkit.platform")


async def _bounded(check: Awaitable[Any]) -> str | None:
    """None if ``check`` succeeds within CHECK_TIMEOUT, else what went wrong, in a few words."""
    timeout = CHECK_TIMEOUT
    try:
        async with asyncio.timeout(timeout):
            await check
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (RedkitError, OSError, httpx.HTTPError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    except Exception as exc:  # a driver's own error type: still "down", with its words
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


async def _ping_db(db: Database) -> None:
    async with db.reading() as session:
        await session.execute(text("SELECT 1"))


async def _smtp_banner(url: str) -> None:
    target = SmtpTarget(url)
    reader, writer = await asyncio.open_connection(target.hostname, target.port)
    try:
        banner = await reader.readline()
        if not banner.startswith(b"220"):
            raise OSError(f"unexpected SMTP greeting {banner[:40]!r}")
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _http_ok(client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url.rstrip("/") + "/healthz")
    if response.status_code != 200:
        raise OSError(f"/healthz answered {response.status_code}")


class _NoCookies(DefaultCookiePolicy):
    """A cookie policy that stores and returns no cookie at all."""

    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: Any) -> bool:
        return False


class _State:
    """What a role's lifespan opened (app.state.platform)."""

    def __init__(self, config: PlatformConfig, role: Role) -> None:
        self.config = config
        self.role = role
        self.rk: Redkit | None = None
        self.db: Database | None = None
        self.http: httpx.AsyncClient | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.worker: redkit.Worker | None = None
        self.session_store: redkit.SessionStore | None = None
        self.login_ip_limiter: redkit.RateLimiter | None = None
        self.login_account_limiter: redkit.RateLimiter | None = None
        self.provisioner: Provisioner | None = None

    async def own_checks(self) -> dict[str, str | None]:
        checks: dict[str, Awaitable[Any]] = {}
        if self.rk is not None:
            checks["valkey"] = self.rk.ping()
        if self.db is not None:
            checks["postgres"] = _ping_db(self.db)
        names = list(checks)
        results = await asyncio.gather(*(_bounded(c) for c in checks.values()))
        out = dict(zip(names, results, strict=True))
        if self.role == "worker":
            task = self.worker_task
            out["worker"] = None if task is not None and not task.done() else "worker loop stopped"
        return out


def _lifespan(
    config: PlatformConfig, role: Role
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = _State(config, role)
        app.state.platform = state
        state.rk = await redkit.connect(config.redis_url, namespace=config.namespace)
        state.db = Database(config.database_url)
        if role in ("auth", "projects"):
            await state.db.create_all()  # idempotent; `redkit up` did it, a lone --role may not
        # Bounded pool: the proxy queues for a connection instead of opening without limit.
        state.http = httpx.AsyncClient(
            timeout=CHECK_TIMEOUT,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            # Never keep a cookie: this client carries every user's requests, and a jar would
            # hand one user's session cookie (from a proxied login) to the next request.
            cookies=CookieJar(policy=_NoCookies()),
        )
        # The brief: a 7-day session lifetime, renewed by activity (absolute cap 30 days).
        # "My sessions" shows when each was last seen: record a touch once a minute (one
        # write per active session per minute), not the default idle/10 (~17 hours).
        state.session_store = state.rk.sessions(
            idle_ttl=timedelta(days=7), touch_every=timedelta(minutes=1)
        )
        if role == "projects":
            public_redis = config.project_redis_url or _without_credentials(config.redis_url)
            state.provisioner = Provisioner(state.rk, config.database_url, public_redis)
        if role == "auth":
            # Credential stuffing: few attempts per account, more per address (NAT, offices).
            state.login_account_limiter = state.rk.rate_limiter(limit=5, window=60)
            state.login_ip_limiter = state.rk.rate_limiter(limit=30, window=60)
        if role == "worker":
            functions: dict[str, Any] = {"deploy": deploy_job(state.rk, state.db)}
            if config.smtp_url:
                functions["email"] = email_job(SmtpTarget(config.smtp_url))
            # uvicorn owns the signals; the lifespan's end stops the worker gracefully.
            state.worker = state.rk.worker(
                queues=list(QUEUES), functions=functions, concurrency=10, handle_signals=False
            )
            state.worker_task = asyncio.create_task(state.worker.run(), name="platform-worker")
        try:
            yield
        finally:
            if state.worker is not None and state.worker_task is not None:
                state.worker.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(state.worker_task, 35)
            await state.http.aclose()
            await state.db.close()
            await state.rk.close()

    return lifespan


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _parts(config: PlatformConfig) -> dict[str, str]:
    parts: dict[str, str] = {}
    if config.auth_url:
        parts["auth"] = config.auth_url
    if config.projects_url:
        parts["projects"] = config.projects_url
    for n, url in enumerate(config.worker_urls, 1):
        parts[f"worker-{n}" if len(config.worker_urls) > 1 else "worker"] = url
    return parts


_OUTAGE_BODY = {
    "error": "unavailable",
    "detail": "the service cannot reach its data store; try again shortly",
}


def _answer_outages_with_503(app: FastAPI, role: Role) -> None:
    """Valkey or PostgreSQL out of reach in the middle of a request: a JSON 503 with
    Retry-After, never Starlette's plain-text 500 (the gateway's own layers already answer so;
    this covers what a service's handlers call, reached through the gateway or directly)."""

    async def outage(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s: %s %s: data store unavailable: %s", role, request.method,
                    request.url.path, exc)  # fmt: skip
        return JSONResponse(_OUTAGE_BODY, status_code=503, headers={"retry-after": "2"})

    # A server that refused or dropped the connection; not a query's own error (those are bugs
    # or bad input, and must stay visible as such).
    # (ConnectionError, not OSError: a TimeoutError or a file's error is not an outage.)
    for kind in (redkit.ConnectionLost, OperationalError, InterfaceError, ConnectionError):
        app.add_exception_handler(kind, outage)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """The 422 of a request that fails validation, as FastAPI's, but ASCII-escaped: its errors
    echo the input, and a lone surrogate (``"\\ud800"`` is valid JSON, refused by pydantic)
    made FastAPI's own handler fail to encode its answer, a 500."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    try:
        detail = jsonable_encoder(errors)
    except ValueError:  # an input that is bytes, not text: say what failed, not what it held
        detail = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errors]
    body = json.dumps({"detail": detail}, ensure_ascii=True, default=repr)
    return Response(body, status_code=422, media_type="application/json")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Last resort: a bug is logged with its traceback, and the client gets JSON, not text."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def build_app(role: Role, config: PlatformConfig) -> FastAPI:
    """The FastAPI app of ``role``."""
    if role not in ROLES:
        raise redkit.InvalidInput(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    # The gateway serves the services' public API description (install_openapi), not its own.
    own_docs = role != "gateway"
    app = FastAPI(
        title=f"redkit platform: {role}",
        lifespan=_lifespan(config, role),
        openapi_url="/openapi.json" if own_docs else None,
        docs_url="/docs" if own_docs else None,
        redoc_url="/redoc" if own_docs else None,
        # "/api/me/" is not "/api/me": a slash redirect would send the client to the
        # service's own address (its Host), which is not public.
        redirect_slashes=False,
    )
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _internal_error)
    _answer_outages_with_503(app, role)
    if role == "gateway":
        # Innermost: a cache hit still counts against the caller's tier (see .caching).
        app.add_middleware(LateMiddleware, build=gateway_cache_middleware)
        # Added inner first: the session is resolved before the rate limit reads its tier.
        app.add_middleware(LateMiddleware, build=tier_limits)
    if role in ("gateway", "auth"):
        app.add_middleware(
            LateMiddleware, build=session_middleware(config.secure_cookies, config.secret)
        )
    if role == "gateway":
        # A browser's write from another origin is refused before anything reads it (CSRF).
        app.add_middleware(SameOriginWrites)
        if config.allowed_hosts is not None:
            # A Host that is none of the gateway's names is refused before anything else.
            app.add_middleware(KnownHosts, hosts=AllowedHosts(config.allowed_hosts))
        app.add_middleware(GatewayMetrics)  # outermost: counts 429s and 503s too

    if role == "gateway":

        @app.get("/healthz")
        async def gateway_health() -> JSONResponse:
            state: _State = app.state.platform
            assert state.http is not None
            began = time.perf_counter()
            names: list[str] = []
            checks: list[Awaitable[str | None]] = []
            own = state.own_checks()
            for name, url in _parts(config).items():
                names.append(name)
                checks.append(_bounded(_http_ok(state.http, url)))
            if config.smtp_url and urlsplit(config.smtp_url).hostname in ("127.0.0.1", "::1"):
                names.append("smtp")
                checks.append(_bounded(_smtp_banner(config.smtp_url)))
            own_results, results = await asyncio.gather(own, asyncio.gather(*checks))
            down = {k: v for k, v in own_results.items() if v is not None}
            down.update({n: r for n, r in zip(names, results, strict=True) if r is not None})
            body = {
                "status": "ok" if not down else "unavailable",
                "parts": [*own_results, *names],
                "down": down,
                "seconds": round(time.perf_counter() - began, 3),
            }
            return JSONResponse(body, status_code=200 if not down else 503)

        install_console(app, config)  # the dashboard at / (admins) and /metrics

        services = {"auth": config.auth_url or "", "projects": config.projects_url or ""}
        install_openapi(app, services)
        # Before the proxy: its catch-all route would take /events and /api/admin/alerts.
        install_events(app, lambda state: platform_bus(state.rk))
        install_proxy(
            app,
            {"auth": config.auth_url or "", "projects": config.projects_url or ""},
            config.secret,
        )

    else:

        @app.get("/healthz")
        async def service_health() -> JSONResponse:
            state: _State = app.state.platform
            results = await state.own_checks()
            down = {k: v for k, v in results.items() if v is not None}
            body = {"status": "ok" if not down else "unavailable", "role": role, "down": down}
            return JSONResponse(body, status_code=200 if not down else 503)

        if role == "auth":
            install_auth(app)
        if role == "projects":
            install_projects(app)
            install_deployments(app, caller)
            install_admin(app, caller)

    return app


def serve(role: Role, port: int, config: PlatformConfig, host: str = "127.0.0.1") -> None:
    """Run ``role`` under uvicorn until SIGTERM/SIGINT (uvicorn's own graceful shutdown)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            build_app(role, config),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
            # The gateway is the edge: a client's X-Forwarded-For means nothing there. Services
            # take the client address from the gateway's header (loopback peers only).
            proxy_headers=role != "gateway",
            forwarded_allow_ips="127.0.0.1",
            # Bounded: a slow client cannot hold a connection open for ever.
            timeout_keep_alive=5,
        )
    )
    server.run()
