"""Pure ASGI rate-limit middleware (no BaseHTTPMiddleware: streaming and lifespan pass
through untouched, and there is no extra task per request).

::

    app.add_middleware(RateLimitMiddleware, policy=TierPolicy(rk, identify=who_is_it))

Every response gets ``RateLimit-Policy`` and ``RateLimit`` (and the ``X-RateLimit-*``
headers with ``legacy_headers=True``). A rejected request gets ``429`` with ``Retry-After``
and a JSON body that says how long to wait. Redis being down never turns into a 500: the
limiter's fail policy answers (see :mod:`redkit.ratelimit.limiter`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from redkit.ratelimit.headers import (
    ietf_headers,
    legacy_headers,
    rejection_body,
    retry_after_header,
)
from redkit.ratelimit.limiter import Decision
from redkit.ratelimit.policy import Policy, resolve_policy

__all__ = ["RateLimitMiddleware"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class RateLimitMiddleware:
    """Check every HTTP request against ``policy``; 429 when it is over its limit."""

    def __init__(self, app: ASGIApp, policy: Policy, *, legacy_headers: bool = False) -> None:
        self.app = app
        self.policy = policy
        self.legacy = legacy_headers

    def headers_for(self, decision: Decision) -> list[tuple[str, str]]:
        headers = ietf_headers(decision)
        if self.legacy:
            headers += legacy_headers(decision)
        return headers

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admission = await resolve_policy(self.policy, scope)
        if admission is None:
            await self.app(scope, receive, send)
            return
        decision = await admission.limits.hit(admission.key, admission.cost)
        scope.setdefault("state", {})["rate_limit"] = decision
        extra = _encode(self.headers_for(decision))
        if not decision.allowed:
            body = orjson.dumps(rejection_body(decision))
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *_encode([retry_after_header(decision)]),
                        *extra,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
