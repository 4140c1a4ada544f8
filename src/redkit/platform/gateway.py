"""The gateway's reverse proxy: path prefix -> service, identity signed, errors as JSON.

Per request: the session (cookie or bearer) is resolved by the gateway's SessionMiddleware;
the request goes to the service that owns the path with a fresh signed
``X-Redkit-Identity`` (:mod:`.identity`) in place of any the client sent, and
``X-Forwarded-For`` set (not appended) to the client's address. The request body is read up to
:data:`MAX_BODY` bytes (413 past it); the response streams back. A service that refuses the
connection gives a JSON 503, one that fails mid-way or answers too slowly a JSON 502, both
within bounded time (connect 2 s, the whole answer :data:`READ_TIMEOUT`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection

from redkit.platform.identity import HEADER, Identity, sign_identity
from redkit.ratelimit.middleware import RateLimitMiddleware
from redkit.ratelimit.policy import DEFAULT_TIERS, Admission, TierPolicy
from redkit.ratelimit.policy import Identity as TierIdentity
from redkit.sessions.middleware import RequestSession, current_session

__all__ = ["MAX_BODY", "ROUTES", "install_proxy", "route_for", "tier_limits"]

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
# Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself.
_REQUEST_DROP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", HEADER, "x-forwarded-for",
    "forwarded", "x-real-ip",
}  # fmt: skip
_RESPONSE_DROP = {
    "connection", "keep-alive", "proxy-authenticate", "te", "trailer", "transfer-encoding",
    "upgrade", "content-length", "server", "date",
}  # fmt: skip


def route_for(path: str) -> str | None:
    """The service that answers ``path``, or None."""
    for prefix, service in ROUTES:
        if path == prefix.rstrip("/") or path.startswith(prefix):
            return service
    return None


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


def install_proxy(app: FastAPI, services: dict[str, str], secret: str) -> None:
    """Route every path of ROUTES to ``services[name]`` (a base URL)."""

    @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def proxy(path: str, request: Request) -> Response:
        service = route_for(request.url.path)
        base = services.get(service or "")
        if service is None or base is None:
            return _error(404, "no such path")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return _error(413, f"the request body is limited to {MAX_BODY} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"the request body is limited to {MAX_BODY} bytes")
        ip = request.client.host if request.client else None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP]
        identity = identity_of(current_session(request), ip)
        headers.append((HEADER, sign_identity(identity, secret)))
        if ip:
            headers.append(("x-forwarded-for", ip))
        client: httpx.AsyncClient = request.app.state.platform.http
        try:
            upstream = client.build_request(
                request.method,
                base.rstrip("/") + request.url.path,
                params=request.url.query,
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
        response_headers = [
            (k, v) for k, v in answer.headers.multi_items() if k.lower() not in _RESPONSE_DROP
        ]
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
            whole.raw_headers = [
                *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers),
                (b"content-length", str(len(content)).encode()),
            ]
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
        response.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers
        ]
        return response
