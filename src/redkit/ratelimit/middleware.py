"""Pure ASGI rate-limit middleware (no BaseHTTPMiddleware: streaming and lifespan pass
through untouched, and there is no extra task per request).

::

    app.add_middleware(RateLimitMiddleware, policy=TierPolicy(rk, identify=who_is_it))

Every HTTP request and every WebSocket handshake is checked. Every response gets
``RateLimit-Policy`` and ``RateLimit`` (and the ``X-RateLimit-*`` headers with
``legacy_headers=True``); an accepted WebSocket gets them on its handshake response. A
rejected request gets ``429`` with ``Retry-After`` and a flat JSON body that says how long to
wait (:func:`~redkit.ratelimit.headers.rejection_body`, the same body as the FastAPI
dependency's). A rejected WebSocket handshake gets the same ``429`` response where the
server supports the ``websocket.http.response`` extension (uvicorn does), else it is closed
with code 1008 (policy violation) before it is accepted. Redis being down never turns into a
500: the limiter's fail policy answers (see :mod:`redkit.ratelimit.limiter`), and a key the
limiter refuses (e.g. an identity longer than the key limit) is a ``400`` with a JSON body.

What it protects against: one client (an IP address, an IPv6 /64, or an identity that
``identify`` names) taking more than its tier's share, over HTTP and WebSocket alike. What
it needs from you: the proxies in front of the app (``trusted_proxies``, see
:mod:`redkit.ratelimit.address`), ``"unix"`` among them when the app listens on a Unix
socket, and an ``ipv6_prefix`` if /64 is not how your clients' networks are handed out.

With the FastAPI dependency on a route too, the response carries one set of headers, for
the most restrictive of the two decisions (the dependency records it in
``scope["state"]["rate_limit"]``; this middleware writes the headers of what is there when
the response starts).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson

from redkit.errors import ConfigurationError, InvalidInput
from redkit.ratelimit import metrics
from redkit.ratelimit.headers import (
    RATE_LIMIT_HEADERS,
    ietf_headers,
    legacy_headers,
    rejection_body,
    retry_after_header,
)
from redkit.ratelimit.limiter import Decision
from redkit.ratelimit.policy import Policy, resolve_policy

__all__ = ["RateLimitMiddleware"]

log = logging.getLogger("redkit.ratelimit")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_LEGACY_PREFIX = b"x-ratelimit-"
_OURS = frozenset(name.encode() for name in RATE_LIMIT_HEADERS)


def _encode(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class RateLimitMiddleware:
    """Check every HTTP request and WebSocket handshake against ``policy``; 429 when over.

    ``limit_websockets=False`` lets WebSocket handshakes through unchecked (not
    recommended: a client refused over HTTP could then open sockets at will).
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: Policy,
        *,
        legacy_headers: bool = False,
        limit_websockets: bool = True,
    ) -> None:
        self.app = app
        self.policy = policy
        self.legacy = legacy_headers
        self.limit_websockets = limit_websockets

    def headers_for(self, decision: Decision, legacy: bool | None = None) -> list[tuple[str, str]]:
        headers = ietf_headers(decision)
        if self.legacy if legacy is None else legacy:
            headers += legacy_headers(decision)
        return headers

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and (kind != "websocket" or not self.limit_websockets):
            await self.app(scope, receive, send)
            return
        try:
            admission = await resolve_policy(self.policy, scope)
            if admission is None:
                metrics.HTTP_EXEMPT.inc()
                await self.app(scope, receive, send)
                return
            decision = await admission.limits.hit(admission.key, admission.cost)
        except ConfigurationError:
            raise
        except InvalidInput as exc:
            # An attacker-written value the limiter refuses (a key past its size limit): a
            # clear 400, not a 500, and the app does not run.
            log.info("rate limiting refused a request: %s", exc)
            metrics.HTTP_INVALID.inc()
            body = {"error": "invalid_request", "message": str(exc)}
            await self._refuse(scope, receive, send, 400, body, [])
            return
        state = scope.setdefault("state", {})
        state["rate_limit"] = decision
        if not decision.allowed:
            metrics.HTTP_LIMITED.inc()
            await self._refuse(
                scope,
                receive,
                send,
                429,
                rejection_body(decision),
                [retry_after_header(decision), *self.headers_for(decision)],
            )
            return
        metrics.HTTP_ALLOWED.inc()

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = dict(message)
                final = state.get("rate_limit")
                message["headers"] = self._final_headers(
                    list(message.get("headers") or ()),
                    final if isinstance(final, Decision) else decision,
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _final_headers(
        self, headers: list[tuple[bytes, bytes]], final: Decision
    ) -> list[tuple[bytes, bytes]]:
        """The response's headers with one set of rate-limit fields, for ``final``.

        A dependency inside the app may have written its own (and replaced the decision in
        the scope's state by the most restrictive one): those are dropped and rewritten, so
        the fields never describe two decisions at once.
        """
        legacy = self.legacy
        kept = []
        for name, value in headers:
            lower = bytes(name).lower()
            if lower in _OURS:
                legacy = legacy or lower.startswith(_LEGACY_PREFIX)
                continue
            if lower == b"retry-after" and not final.allowed:
                continue  # rewritten below from the same decision
            kept.append((name, value))
        extra = self.headers_for(final, legacy)
        if not final.allowed:
            extra.insert(0, retry_after_header(final))
        return [*kept, *_encode(extra)]

    async def _refuse(
        self,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        status: int,
        body: Mapping[str, object],
        headers: list[tuple[str, str]],
    ) -> None:
        payload = orjson.dumps(body)
        fields = [(b"content-type", b"application/json"), *_encode(headers)]
        if scope["type"] == "http":
            fields.append((b"content-length", str(len(payload)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": fields})
            await send({"type": "http.response.body", "body": payload})
            return
        # A WebSocket handshake: the connect event comes first, then the refusal, before any
        # accept (so the app never sees the socket).
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left already
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": fields}
            )
            await send({"type": "websocket.http.response.body", "body": payload})
        else:
            reason = "rate limited" if status == 429 else "invalid request"
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
