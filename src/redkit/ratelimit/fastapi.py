"""A FastAPI dependency for per-route limits (imports FastAPI; the core does not).

::

    search_limit = rk.rate_limiter(30, 60)
    app.add_exception_handler(RateLimitError, rate_limit_exception_handler)

    @app.get("/search", dependencies=[Depends(rate_limit(search_limit))])
    async def search(q: str): ...

**The key defaults to the client IP** (``ip:<address>``, IPv6 by ``/64``), found as
:class:`redkit.ratelimit.address.ClientIP` does: pass the same ``trusted_proxies`` (and
``ipv6_prefix``) as for the middleware, or ``key=lambda request: ...`` to limit per user
or API key. Every caller behind one proxy shares one limit unless that proxy is trusted.

A rejection raises :class:`RateLimitExceeded` (an ``HTTPException(429)``) with
``Retry-After`` and the ``RateLimit`` headers. With :func:`rate_limit_exception_handler`
registered for :class:`RateLimitError`, its body is the flat JSON of the middleware's 429
(:func:`~redkit.ratelimit.headers.rejection_body`), and a refused key's 400 is flat too;
without it, FastAPI's default handler nests the same object under ``"detail"``.
:class:`redkit.web.RedkitWeb` registers it for you.

With :class:`~redkit.ratelimit.middleware.RateLimitMiddleware` in front as well (or
several of these dependencies on one route), the response carries one set of rate-limit
headers: those of the most restrictive decision
(:func:`~redkit.ratelimit.headers.most_restrictive`), which is also what the dependency
leaves in ``request.state.rate_limit``. The dependency returns its own limit's decision.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse

from redkit.errors import InvalidInput
from redkit.ratelimit.address import ClientIP
from redkit.ratelimit.headers import (
    RATE_LIMIT_HEADERS,
    ietf_headers,
    legacy_headers,
    most_restrictive,
    rejection_body,
    retry_after_header,
)
from redkit.ratelimit.limiter import Decision, RateLimiter, RateLimits

__all__ = ["RateLimitError", "RateLimitExceeded", "rate_limit", "rate_limit_exception_handler"]

KeyFunc = Callable[[Request], Awaitable[str] | str]


class RateLimitError(HTTPException):
    """An HTTP error of :func:`rate_limit` whose ``detail`` is the JSON body the middleware
    would send for the same case: a 429 (:class:`RateLimitExceeded`), or a 400 for a key the
    limiter refuses."""


class RateLimitExceeded(RateLimitError):
    """A 429 from :func:`rate_limit`; ``decision`` is the decision that rejected."""

    def __init__(self, decision: Decision, headers: dict[str, str]) -> None:
        super().__init__(status_code=429, detail=rejection_body(decision), headers=headers)
        self.decision = decision


async def rate_limit_exception_handler(request: Request, exc: Exception) -> Response:
    """Answer a :class:`RateLimitError` (a 429, or a 400 for a refused key) with the
    middleware's flat JSON body.

    ``app.add_exception_handler(RateLimitError, rate_limit_exception_handler)`` (registering
    it for :class:`RateLimitExceeded` covers the 429s only).
    """
    if not isinstance(exc, RateLimitError):  # registered for another class by mistake
        raise exc
    return JSONResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


def rate_limit(
    limits: RateLimiter | RateLimits,
    *,
    key: KeyFunc | None = None,
    cost: int = 1,
    legacy: bool = False,
    trusted_proxies: Iterable[str] = (),
    ipv6_prefix: int = 64,
) -> Callable[[Request, Response], Awaitable[Decision]]:
    """A dependency that checks ``limits`` for the request's key and returns the Decision.

    The key is ``key(request)`` (sync or async), else the client IP (see the module's
    docstring for the proxies). A key the limiter refuses (empty, or longer than 512 bytes)
    is a 400 with a JSON body.
    """
    addresses = ClientIP(trusted_proxies, ipv6_prefix=ipv6_prefix)

    async def dependency(request: Request, response: Response) -> Decision:
        if key is None:
            name = addresses.key(request.scope)
        else:
            found = key(request)
            name = await found if inspect.isawaitable(found) else found
        try:
            decision = await limits.hit(name, cost)
        except InvalidInput as exc:
            raise RateLimitError(
                status_code=400, detail={"error": "invalid_request", "message": str(exc)}
            ) from exc
        # One set of headers per response: the most restrictive decision of this request
        # (the middleware's, an earlier dependency's, this one).
        state = request.scope.setdefault("state", {})
        earlier = state.get("rate_limit")
        final = most_restrictive(earlier, decision) if isinstance(earlier, Decision) else decision
        state["rate_limit"] = final
        headers = ietf_headers(final) + (legacy_headers(final) if legacy else [])
        if not decision.allowed:
            raise RateLimitExceeded(decision, dict([*headers, retry_after_header(final)]))
        for header in RATE_LIMIT_HEADERS:
            if header in response.headers:
                del response.headers[header]
        for header, value in headers:
            response.headers[header] = value
        return decision

    return dependency
