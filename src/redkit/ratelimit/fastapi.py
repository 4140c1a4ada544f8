"""A FastAPI dependency for per-route limits (imports FastAPI; the core does not).

::

    search_limit = rk.rate_limiter(30, 60)

    @app.get("/search", dependencies=[Depends(rate_limit(search_limit))])
    async def search(q: str): ...

The key defaults to the client IP (``trusted_proxies`` as in
:func:`redkit.ratelimit.policy.client_ip`); pass ``key=lambda request: ...`` to limit per
user or API key. A rejection raises ``HTTPException(429)`` whose ``detail`` carries the
retry time, with ``Retry-After`` and the ``RateLimit`` headers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from fastapi import HTTPException, Request, Response

from redkit.ratelimit.headers import (
    ietf_headers,
    legacy_headers,
    rejection_body,
    retry_after_header,
)
from redkit.ratelimit.limiter import Decision, RateLimiter, RateLimits
from redkit.ratelimit.policy import TrustedProxies, client_ip

__all__ = ["rate_limit"]

KeyFunc = Callable[[Request], Awaitable[str] | str]


def rate_limit(
    limits: RateLimiter | RateLimits,
    *,
    key: KeyFunc | None = None,
    cost: int = 1,
    legacy: bool = False,
    trusted_proxies: Iterable[str] = (),
) -> Callable[[Request, Response], Awaitable[Decision]]:
    """A dependency that checks ``limits`` for the request's key and returns the Decision."""
    trusted = TrustedProxies(trusted_proxies)

    async def dependency(request: Request, response: Response) -> Decision:
        if key is None:
            name = "ip:" + client_ip(request.scope, trusted)
        else:
            found = key(request)
            name = await found if inspect.isawaitable(found) else found
        decision = await limits.hit(name, cost)
        headers = ietf_headers(decision) + (legacy_headers(decision) if legacy else [])
        if not decision.allowed:
            raise HTTPException(
                status_code=429,
                detail=rejection_body(decision),
                headers=dict([*headers, retry_after_header(decision)]),
            )
        for header, value in headers:
            response.headers[header] = value
        return decision

    return dependency
