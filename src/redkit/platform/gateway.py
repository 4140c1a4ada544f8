"""The gateway's reverse proxy: path prefix -> service, identity signed, errors as JSON.

Per request: the session (cookie or bearer) is resolved by the gateway's SessionMiddleware;
the request goes to the service that owns the path with a fresh signed
``X-Redkit-Identity`` (:mod:`.identity`) in place of any the client sent, and
``X-Forwarded-For`` set (not appended) to the client's address. The path and query go on
exactly as the client sent them (still percent-encoded), so the service decodes and routes
the very path the gateway routed; a path with a ``.`` or ``..`` segment (sent or encoded)
is refused with a 400, since the two sides could resolve it differently. Header names and
values travel as bytes, never re-encoded. The request body is read up to
:data:`MAX_BODY` bytes (413 past it); the response streams back. A service that refuses the
connection gives a JSON 503, one that fails mid-way or answers too slowly a JSON 502, both
within bounded time (connect 2 s, the whole answer :data:`READ_TIMEOUT`).

``GET /openapi.json`` on the gateway is the public API: the services' own OpenAPI documents,
each path taken from the service that answers it (:func:`public_openapi`), with the session's
two ways in (bearer token, cookie) as security schemes; ``/docs`` shows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from redkit.hosts import AllowedHosts
from redkit.platform.identity import HEADER, Identity, sign_identity
from redkit.ratelimit.middleware import RateLimitMiddleware
from redkit.ratelimit.policy import DEFAULT_TIERS, Admission, TierPolicy
from redkit.ratelimit.policy import Identity as TierIdentity
from redkit.sessions.middleware import RequestSession, current_session

__all__ = [
    "MAX_BODY",
    "ROUTES",
    "KnownHosts",
    "SameOriginWrites",
    "install_openapi",
    "install_proxy",
    "public_openapi",
    "route_for",
    "tier_limits",
]

MAX_BODY = 1024 * 1024
READ_TIMEOUT = 30.0
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# First match wins: (path prefix, service).
ROUTES: tuple[tuple[str, str], ...] = (
    ("/auth/", "auth"),
    ("/api/me", "auth"),
    ("/api/admin/users", "auth"),
    ("/api/users/", "auth"),
    ("/api/", "projects"),
)
# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself; the edge's client
# says nothing a service may trust about addresses, schemes or hosts it came through.
_REQUEST_DROP = frozenset(
    name.encode()
    for name in (
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", HEADER,
        "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
        "x-forwarded-prefix", "forwarded", "x-real-ip",
    )
)  # fmt: skip
_RESPONSE_DROP = frozenset(
    name.encode()
    for name in (
        "connection", "keep-alive", "proxy-authenticate", "proxy-connection", "te", "trailer",
        "transfer-encoding", "upgrade", "content-length", "server", "date",
    )
)  # fmt: skip


def route_for(path: str) -> str | None:
    """The service that answers ``path``, or None."""
    for prefix, service in ROUTES:
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return service
    return None


def public_openapi(documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One OpenAPI document of the gateway's public paths from the services' own
    (``{"auth": {...}, "projects": {...}}``): a path comes from the service :func:`route_for`
    sends it to, so the document shows exactly what the gateway serves (no service's
    ``/healthz``), and every path of ``"gateway"``'s own document. Component schemas are
    shared by name; two services that define one name
    differently cannot be merged without renaming, and are refused (ValueError)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    version = "3.1.0"
    for service, document in documents.items():
        version = str(document.get("openapi", version))
        for path, operations in (document.get("paths") or {}).items():
            # The gateway's own paths (alerts, /healthz) are served before the proxy routes.
            if service == "gateway" or route_for(path) == service:
                paths[path] = operations
        for name, schema in ((document.get("components") or {}).get("schemas") or {}).items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"two services define the schema {name!r} differently")
    return {
        "openapi": version,
        "info": {
            "title": "redkit platform",
            "version": "1",
            "description": "The public API, served by the gateway (auth and projects services).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
        },
        # Every path takes a session either way, and most answer an anonymous caller too.
        "security": [{"bearer": []}, {"cookie": []}, {}],
    }


def install_openapi(app: FastAPI, services: dict[str, str]) -> None:
    """``GET /openapi.json`` (:func:`public_openapi` of the services' documents, read when
    asked, so it never goes stale) and ``/docs`` (Swagger UI over it) on the gateway."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        client: httpx.AsyncClient = request.app.state.platform.http
        names = [name for name, base in services.items() if base]

        async def fetch(name: str) -> Any:
            answer = await client.get(services[name].rstrip("/") + "/openapi.json", timeout=5.0)
            answer.raise_for_status()
            return answer.json()

        results = await asyncio.gather(*(fetch(n) for n in names), return_exceptions=True)
        documents: dict[str, Any] = {}
        down: list[str] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                down.append(name)
            else:
                documents[name] = result
        if down:
            return _error(503, "a service did not give its API description", services=down)
        documents["gateway"] = app.openapi()
        return JSONResponse(public_openapi(documents))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="redkit platform API")


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def identity_of(rs: RequestSession, ip: str | None) -> Identity:
    if rs.session is None:
        return Identity(None, "anonymous", ip=ip)
    kind = str(rs.session.data.get("type", "user"))
    return Identity(rs.session.user_id, kind, rs.session.id_prefix, ip)


UNLIMITED_PATHS = frozenset({"/healthz"})  # monitors poll it; it costs no service a request


def tier_limits(app: Any, state: Any) -> Any:
    """The brief's tiers over every request but /healthz: anonymous 10/min by client IP, user
    100/min, premium 1000/min, admin 10000/min per user; IETF and X-RateLimit-* headers, a JSON
    429 with Retry-After (redkit's RateLimitMiddleware and TierPolicy)."""
    tiers = TierPolicy(state.rk, _tier_of)

    async def policy(scope: Mapping[str, Any]) -> Admission | None:
        if scope.get("path") in UNLIMITED_PATHS:
            return None
        return await tiers(scope)

    return RateLimitMiddleware(app, policy=policy, legacy_headers=True)


def _tier_of(scope: Mapping[str, Any]) -> TierIdentity | None:
    session = current_session(HTTPConnection(cast(Any, scope))).session
    if session is None:
        return None
    tier = str(session.data.get("type", "user"))
    return TierIdentity(tier if tier in DEFAULT_TIERS else "user", session.user_id)


def _hop_by_hop(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """The header names the ``Connection`` header(s) list: hop-by-hop, never forwarded."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(part.strip().lower() for part in value.split(b","))
    return named


def _forwarded_headers(headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]) -> Any:
    """The client's headers a service may see, as bytes: what the gateway sets itself and
    the hop-by-hop ones are gone, whatever their case, and so are ``_`` spellings of them
    (``X_Redkit_Identity``), which CGI-style servers read as the ``-`` name."""
    also = _hop_by_hop(headers)
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in drop or lowered in also or lowered.replace(b"_", b"-") in drop:
            continue
        kept.append((lowered, value))
    return kept


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class KnownHosts:
    """Answers a request whose ``Host`` is none of the gateway's names with a JSON 400 (a
    WebSocket handshake: the same 400, or a close 1008), before anything reads it. A made-up
    Host is how DNS rebinding reaches a gateway on a private address, and each one would
    make cache entries of its own. The health probes are exempt: a load balancer asks them
    by address."""

    def __init__(self, app: ASGIApp, hosts: AllowedHosts) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in _PROBES:
            await self.app(scope, receive, send)
            return
        values = Headers(scope=scope).getlist("host")
        if len(values) == 1 and self.hosts.allows(values[0]):
            await self.app(scope, receive, send)
            return
        payload = orjson.dumps({"detail": "unknown host: this gateway answers its own names"})
        fields = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 400, "headers": fields})
            await send({"type": "http.response.body", "body": payload})
            return
        if (await receive())["type"] != "websocket.connect":
            return  # the client left already
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": 400, "headers": fields})
            await send({"type": "websocket.http.response.body", "body": payload})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": "unknown host"})


_PROBES = frozenset({"/healthz", "/readyz"})


class SameOriginWrites:
    """Refuses (JSON 403) a write (POST, PUT, PATCH, DELETE) that a browser says comes from
    another origin: ``Sec-Fetch-Site: cross-site | same-site``, or an ``Origin`` whose host
    and port are not the request's ``Host``. The session cookie is ``SameSite=Lax``, which
    keeps it off *cross-site* posts only: a page on another port of the same host, or on a
    sibling subdomain, is "same site" and its plain HTML form would post with the victim's
    cookie (start a deployment, sign out everywhere, publish an alert). Clients that are no
    browser send neither header and are not affected; the dashboard's actions check their
    CSRF token besides."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") not in _SAFE_METHODS:
            headers = Headers(scope=scope)
            if _cross_origin(headers):
                refusal = _error(403, "a write from another origin is refused (CSRF)")
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _cross_origin(headers: Headers) -> bool:
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return True
    origins = headers.getlist("origin")
    if not origins:
        return False
    if len(origins) > 1:
        return True
    try:
        origin = httpx.URL(origins[0].strip())
    except (httpx.InvalidURL, ValueError):
        return True  # "null" (a sandboxed frame, a redirect's) or garbage: not this site
    if origin.scheme not in ("http", "https") or not origin.host:
        return True
    default = 443 if origin.scheme == "https" else 80
    try:
        own = httpx.URL(f"{origin.scheme}://{headers.get('host', '').strip()}")
    except (httpx.InvalidURL, ValueError):
        return True
    # Host and port only: behind a TLS-terminating proxy the gateway sees http for https.
    return (origin.host, origin.port or default) != (own.host, own.port or default)


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def install_proxy(app: FastAPI, services: dict[str, str], secret: str) -> None:
    """Route every path of ROUTES to ``services[name]`` (a base URL)."""

    @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def proxy(path: str, request: Request) -> Response:
        decoded: str = request.scope["path"]
        service = route_for(decoded)
        base = services.get(service or "")
        if service is None or base is None:
            return _error(404, "no such path")
        if _has_dot_segment(decoded):
            return _error(400, "a path with '.' or '..' segments is not served")
        raw_path = request.scope.get("raw_path") or decoded.encode()
        query = request.scope.get("query_string") or b""
        try:
            # As sent: re-encoding the decoded path would turn %2F into a new segment and
            # %3F into a query, and the service would route another path than the gateway.
            target = httpx.URL(base).copy_with(raw_path=raw_path + (b"?" + query if query else b""))
        except (httpx.InvalidURL, ValueError):
            return _error(400, "the request target is not a valid URL")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return _error(413, f"the request body is limited to {MAX_BODY} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"the request body is limited to {MAX_BODY} bytes")
        ip = request.client.host if request.client else None
        headers = _forwarded_headers(request.scope["headers"], _REQUEST_DROP)
        identity = identity_of(current_session(request), ip)
        headers.append((HEADER.encode(), sign_identity(identity, secret).encode()))
        if ip:
            headers.append((b"x-forwarded-for", ip.encode()))
        # The scheme the client used (the gateway's own, never a client's claim of it).
        headers.append((b"x-forwarded-proto", str(request.scope.get("scheme", "http")).encode()))
        client: httpx.AsyncClient = request.app.state.platform.http
        try:
            upstream = client.build_request(
                request.method,
                target,
                headers=headers,
                content=bytes(body),
                timeout=httpx.Timeout(READ_TIMEOUT, connect=2.0),
            )
        except httpx.InvalidURL:  # e.g. a %00 in the path: no service has such a path
            return _error(404, "no such path")
        try:
            answer = await client.send(upstream, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return _error(503, f"the {service} service is unavailable", service=service)
        except httpx.HTTPError:
            return _error(502, f"the {service} service failed to answer", service=service)
        response_headers = _forwarded_headers(list(answer.headers.raw), _RESPONSE_DROP)
        declared = answer.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) <= MAX_BODY
            and request.method != "HEAD"
            and answer.status_code not in (204, 304)
        ):
            # A bounded body of known size goes back in one message: the response cache stores
            # only such answers (a stream passes through it uncached). Raw bytes: a service's
            # content-encoding reaches the client as it was sent.
            try:
                content = b"".join([chunk async for chunk in answer.aiter_raw()])
            except httpx.HTTPError:
                return _error(502, f"the {service} service failed to answer", service=service)
            finally:
                await answer.aclose()
            whole = Response(content, status_code=answer.status_code)
            whole.raw_headers = [*response_headers, (b"content-length", str(len(content)).encode())]
            return whole

        async def relay() -> Any:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                return  # the service died mid-answer: the client sees a cut response

        response = StreamingResponse(
            relay(), status_code=answer.status_code, background=BackgroundTask(answer.aclose)
        )
        # Set-Cookie and other repeated headers survive: raw list, not a dict.
        response.raw_headers = response_headers
        return response
