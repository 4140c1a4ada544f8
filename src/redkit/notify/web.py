"""Notifications to browsers: Server-Sent Events and WebSocket routes for Starlette/FastAPI.

::

    from redkit.notify.web import notification_routes, pattern_prefix

    async def authorize(conn: HTTPConnection, channels: list[str]) -> list[str]:
        user = await current_user(conn)                      # your auth
        return [c for c in channels if c == "system:alert" or c == f"user:{user.id}"]

    async def authorize_patterns(conn: HTTPConnection, patterns: list[str]) -> list[str]:
        user = await current_user(conn)
        return [p for p in patterns if user.member_of(pattern_prefix(p))]

    app.router.routes.extend(
        notification_routes(bus, authorize=authorize, authorize_patterns=authorize_patterns)
    )
    # or: app.mount("/notify", Router(notification_routes(bus, authorize=authorize)))

A client asks for channels and patterns in the query string:
``GET /events?channel=system:alert&channel=project:p1&pattern=deployment:p1:*``
(``/ws?...`` for the WebSocket). Every name is written by the client: treat it as hostile.

**Authorization** (there is no default: pass :func:`allow_all` explicitly for public
channels). Each hook may be a plain or an ``async`` function, gets the requested names and
returns those the connection may receive; the rest are dropped, and if none is left the
answer is 403 (WebSocket: the handshake is refused with 403).

- ``authorize(conn, channels)`` gets the *exact channel names* only. A channel name is
  literal, never a pattern (``user:*`` as a channel is the one channel of that name), so
  comparing it with the names the connection may read is enough.
- ``authorize_patterns(conn, patterns)`` gets the *glob patterns* (Redis syntax: ``*``,
  ``?``, ``[...]``, ``\\`` escapes). A pattern receives every channel it matches, so a hook
  must grant it only if **every channel the pattern can match** is one the connection may
  read: check its literal start with :func:`pattern_prefix` (``pattern_prefix(p)
  .startswith(f"project:{pid}:")``), never compare the pattern text with a channel name as
  if it were one (a pattern ``user:*`` equals the channel name ``"user:" + uid`` for a user
  whose id is ``*``). Without this hook (the default) every pattern is refused.

A hook written for the earlier single-list form ``authorize(conn, names)`` keeps working for
channels; patterns then need ``authorize_patterns``.

**Origins.** A browser sends its cookies with a WebSocket handshake from any site, and the
same-origin policy does not protect WebSocket responses, so the WebSocket route checks the
``Origin`` header (cross-site WebSocket hijacking): by default only pages of the origin
whose host is the request's ``Host`` may connect (``allowed_origins=["https://app.example"]``
lists others; ``allowed_origins="*"`` allows any, for routes that use no ambient
credentials). A handshake without ``Origin`` (a non-browser client, which holds no victim's
cookies) is allowed. SSE needs no such check: a cross-origin ``EventSource`` cannot read the
stream unless the app sends CORS headers that allow it.

**Limits.** A request names at most ``bus.max_channels`` channels and patterns together
(default 100), each at most 256 characters; a ``Last-Event-ID`` is an event id or a cursor
of at most 256 channels. Anything else is refused before subscribing: SSE answers 400 (413
for too many names) with a JSON body ``{"error", "message"}``; the WebSocket accepts the
handshake and closes at once with code 1008 and the reason.

**SSE** (``text/event-stream``): each event is ``id: <cursor>`` + ``data: <json>`` with
``{"id", "channel", "time", "data"}``; a gap is ``event: gap``. The ``id:`` is the
subscription's resume cursor, so a reconnecting ``EventSource`` sends it back as
``Last-Event-ID`` and resumes with nothing missed (``?last_event_id=`` works too, for the
first connection). A ``retry:`` hint opens the stream and a comment line is sent as a
heartbeat when nothing else was (``heartbeat`` seconds), so proxies keep the connection.

**WebSocket**: one text frame per event, ``{"type": "event"|"gap", "id", "channel", "time",
"data", "cursor"}``; resume with ``?last_event_id=<cursor>``. Messages from the client are
ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from redkit.errors import ConfigurationError, InvalidInput, RedkitError
from redkit.notify.bus import NotificationBus, Subscription
from redkit.notify.events import Event, pattern_prefix

__all__ = [
    "AllowedOrigins",
    "Authorize",
    "allow_all",
    "notification_routes",
    "pattern_prefix",
    "sse_endpoint",
    "websocket_endpoint",
]

log = logging.getLogger("redkit.notify")

Authorize = Callable[[HTTPConnection, list[str]], Iterable[str] | Awaitable[Iterable[str]]]
"""``authorize(conn, requested) -> allowed`` (sync or async): ``authorize`` gets exact
channel names, ``authorize_patterns`` glob patterns (see the module docstring)."""

AllowedOrigins = Iterable[str] | Literal["*"] | None
"""``None``: the request's own host only; a list of origins (``"https://app.example"``);
``"*"``: any origin (unsafe with cookie authentication)."""

BusSource = NotificationBus | Callable[[HTTPConnection], NotificationBus]
"""The bus, or a function of the connection that returns it (for a bus made in a lifespan:
``lambda conn: conn.app.state.bus``)."""

_MAX_QUERY_VALUES = 1024
"""Query parameters a request may carry at all, whatever their names: reading them is
work done before any name is checked."""


def allow_all(conn: HTTPConnection, names: list[str]) -> list[str]:
    """A hook that lets everyone receive every name it is given (public channels).

    As ``authorize_patterns`` it lets anyone subscribe to any pattern, ``*`` included.
    """
    return names


class _Refused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error

    def response(self) -> Response:
        return JSONResponse({"error": self.error, "message": str(self)}, self.status)


async def _granted(hook: Authorize, conn: HTTPConnection, names: list[str]) -> set[str]:
    if not names:
        return set()
    verdict = hook(conn, list(names))
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return set(verdict)


async def _open(
    source: BusSource,
    conn: HTTPConnection,
    authorize: Authorize,
    authorize_patterns: Authorize | None,
    last_event_id: str | None,
) -> Subscription:
    """The (not yet entered) subscription this connection asked for and may have."""
    query = conn.query_params
    if len(query.multi_items()) > _MAX_QUERY_VALUES:
        raise _Refused(413, "too_many_parameters", f"at most {_MAX_QUERY_VALUES} query parameters")
    channels = query.getlist("channel")
    patterns = query.getlist("pattern")
    if not channels and not patterns:
        raise _Refused(
            400,
            "invalid_request",
            "name at least one channel (?channel=...) or pattern (?pattern=...)",
        )
    bus = source if isinstance(source, NotificationBus) else source(conn)
    if len(channels) + len(patterns) > bus.max_channels:
        raise _Refused(
            413,
            "too_many_channels",
            f"a request names at most {bus.max_channels} channels and patterns together",
        )
    try:
        # Validated before the hooks see them: a hook gets well-formed names only.
        bus.subscribe(*channels, patterns=patterns, last_event_id=last_event_id or None)
    except InvalidInput as exc:
        raise _Refused(400, "invalid_request", str(exc)) from None
    # Channels and patterns go to separate hooks: a check written for a channel name
    # must never grant a pattern that happens to be spelt the same.
    allowed_channels = await _granted(authorize, conn, channels)
    channels = [c for c in channels if c in allowed_channels]
    if authorize_patterns is not None:
        allowed_patterns = await _granted(authorize_patterns, conn, patterns)
        patterns = [p for p in patterns if p in allowed_patterns]
    else:
        patterns = []
    if not channels and not patterns:
        raise _Refused(403, "forbidden", "not allowed to receive any of the requested channels")
    try:
        return bus.subscribe(*channels, patterns=patterns, last_event_id=last_event_id or None)
    except InvalidInput as exc:
        raise _Refused(400, "invalid_request", str(exc)) from None


def _origin_key(scheme: str, host: str | None, port: int | None) -> tuple[str, int] | None:
    """``(host, port)`` of an origin, the port made explicit; ``None`` if it is not one."""
    if not host:
        return None
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
    if default is None:
        return None
    return host.lower().rstrip("."), port if port is not None else default


def _parse_origin(value: str) -> tuple[str, tuple[str, int]] | None:
    """An ``Origin`` value as ``(scheme, (host, port))``; ``None`` if it is none (``null``,
    a path, credentials, a bad port)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    scheme = parts.scheme.lower()
    key = _origin_key(scheme, parts.hostname, port)
    return None if key is None else (scheme, key)


class _OriginCheck:
    """Decides whether a WebSocket handshake's ``Origin`` may connect (see the docstring)."""

    def __init__(self, allowed: AllowedOrigins) -> None:
        self.any = allowed == "*"
        self.listed: set[tuple[str, tuple[str, int]]] | None = None
        if allowed is None or self.any:
            return
        if isinstance(allowed, str):
            allowed = [allowed]
        self.listed = set()
        for origin in allowed:
            parsed = _parse_origin(origin) if isinstance(origin, str) else None
            if parsed is None:
                raise ConfigurationError(
                    f"allowed_origins: {origin!r} is not an origin; write "
                    "'scheme://host[:port]', e.g. 'https://app.example' (no path)"
                )
            self.listed.add(parsed)

    def __call__(self, conn: HTTPConnection) -> bool:
        origins = conn.headers.getlist("origin")
        if not origins:
            return True  # not a browser: it has no victim's cookies to send
        if self.any:
            return True
        if len(origins) > 1:
            return False
        parsed = _parse_origin(origins[0])
        if parsed is None:
            return False
        if self.listed is not None:
            return parsed in self.listed
        # Same origin as the host the browser connected to: its Host header, which a page
        # cannot set. The scheme is not compared (behind a TLS proxy the app sees ws://
        # for a page on https://); list the origins to pin it.
        host = conn.headers.get("host")
        if not host:
            return False
        try:
            target = urlsplit("//" + host)
            target_port = target.port
        except ValueError:
            return False
        scheme = parsed[0]
        return _origin_key(scheme, target.hostname, target_port) == parsed[1]


def _envelope(event: Event, cursor: str | None, with_type: bool) -> bytes:
    head: dict[str, Any] = {"id": event.id, "channel": event.channel, "time": event.time}
    if with_type:
        head = {"type": event.type, **head, "cursor": cursor}
    body = event.json if event.json else orjson.dumps(event.data)
    # Splice the published JSON in as it is: no decode/encode per subscriber.
    return orjson.dumps(head)[:-1] + b',"data":' + body + b"}"


def _sse_frame(event: Event, cursor: str | None) -> bytes:
    data = _envelope(event, cursor, with_type=False)
    if event.type == "gap":
        # No id: line, so the browser's Last-Event-ID stays at the last real event.
        return b"event: gap\ndata: " + data + b"\n\n"
    return b"id: " + (cursor or event.id).encode() + b"\ndata: " + data + b"\n\n"


def sse_endpoint(
    bus: BusSource,
    *,
    authorize: Authorize,
    authorize_patterns: Authorize | None = None,
    heartbeat: float = 15.0,
    retry: float = 3.0,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that streams the requested channels as Server-Sent Events.

    ``authorize`` decides the exact channels, ``authorize_patterns`` the patterns (none
    without it); see the module docstring for what each must check.
    """
    retry_line = f"retry: {round(retry * 1000)}\n\n".encode()

    async def endpoint(request: Request) -> Response:
        last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        try:
            sub = await _open(bus, request, authorize, authorize_patterns, last_id)
        except _Refused as exc:
            return exc.response()
        try:
            # Subscribed before the response starts, so that a server that cannot be reached
            # is a 503 the client can act on, not a 200 whose stream ends at once.
            await sub.__aenter__()
        except RedkitError as exc:
            log.warning("notify SSE refused: %s", exc)
            return _unavailable_response()

        async def stream() -> AsyncIterator[bytes]:
            try:
                # Sent once subscribed: a client that has read it misses nothing after.
                yield retry_line
                while True:
                    event = await sub.get(timeout=heartbeat)
                    if event is not None:
                        yield _sse_frame(event, sub.last_event_id)
                    elif sub.closed:
                        return
                    else:
                        yield b": heartbeat\n\n"
            except RedkitError as exc:
                # Headers are sent: tell the client in-band (without the server's address or
                # other internals: those go to the log); EventSource reconnects by itself.
                log.warning("notify SSE stream ended: %s", exc)
                yield retry_line + b"event: error\ndata: " + _STREAM_ERROR + b"\n\n"
            finally:
                await sub.aclose()

        return _EventStream(sub, stream())

    return endpoint


_STREAM_ERROR = orjson.dumps(
    {"error": "unavailable", "message": "the notification stream was interrupted; reconnect"}
)
_UNAVAILABLE = {
    "error": "unavailable",
    "message": "the service cannot reach its data store; try again shortly",
}
_UNAVAILABLE_REASON = "service unavailable; try again later"


def _unavailable_response() -> Response:
    return JSONResponse(
        _UNAVAILABLE, 503, headers={"Retry-After": "2", "Cache-Control": "no-store"}
    )


class _EventStream(StreamingResponse):
    """The event stream of an entered subscription, which it always leaves: also when the
    client is gone before the first byte (the generator then never runs)."""

    def __init__(self, sub: Subscription, content: AsyncIterator[bytes]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._sub = sub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._sub.aclose()


def _reason(text: str) -> str:
    """A close reason: at most 123 bytes of UTF-8 (what a close frame holds)."""
    return text.encode()[:123].decode("utf-8", "ignore")


def websocket_endpoint(
    bus: BusSource,
    *,
    authorize: Authorize,
    authorize_patterns: Authorize | None = None,
    allowed_origins: AllowedOrigins = None,
) -> Callable[[WebSocket], Awaitable[None]]:
    """A Starlette WebSocket endpoint that sends the requested channels as JSON frames.

    ``allowed_origins``: the browser origins that may connect (default: the request's own
    host only; ``"*"``: any). ``authorize`` / ``authorize_patterns`` as for SSE.
    """
    origin_allowed = _OriginCheck(allowed_origins)

    async def endpoint(websocket: WebSocket) -> None:
        if not origin_allowed(websocket):
            # Refused in the handshake (HTTP 403): a page of another site gets no socket.
            log.info("notify WebSocket refused: origin %r", websocket.headers.get("origin"))
            await websocket.close(code=1008, reason="origin not allowed")
            return
        try:
            sub = await _open(
                bus,
                websocket,
                authorize,
                authorize_patterns,
                websocket.query_params.get("last_event_id"),
            )
        except _Refused as exc:
            if exc.status != 403:
                # A mistake in the request, not a denial: accept, so that the client can
                # read why in the close frame.
                await websocket.accept()
            await websocket.close(code=1008, reason=_reason(str(exc)))
            return
        try:
            await sub.__aenter__()
        except RedkitError as exc:
            # Refused before it is accepted: an HTTP 503 where the server can send one, else
            # a close with 1013 (try again later). The error itself goes to the log only.
            log.warning("notify WebSocket refused: %s", exc)
            if "websocket.http.response" in websocket.scope.get("extensions", {}):
                await websocket.send_denial_response(_unavailable_response())
            else:
                await websocket.close(code=1013, reason=_UNAVAILABLE_REASON)
            return
        try:
            # Accepted once subscribed: a client that is connected misses nothing after.
            await websocket.accept()
            await _serve_websocket(websocket, sub)
        finally:
            await sub.aclose()

    return endpoint


async def _serve_websocket(websocket: WebSocket, sub: Subscription) -> None:
    async def pump() -> None:
        async for event in sub:
            frame = _envelope(event, sub.last_event_id, with_type=True)
            await websocket.send_text(frame.decode())

    async def watch() -> None:
        # Reading is how a server learns that the client went away.
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    tasks = [asyncio.create_task(pump()), asyncio.create_task(watch())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    code, reason = 1000, ""
    for task in done:
        error = None if task.cancelled() else task.exception()
        if isinstance(error, RedkitError):
            log.warning("notify WebSocket ended: %s", error)
            code, reason = 1011, _UNAVAILABLE_REASON
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason)


def notification_routes(
    bus: BusSource,
    *,
    authorize: Authorize,
    authorize_patterns: Authorize | None = None,
    allowed_origins: AllowedOrigins = None,
    path: str = "/events",
    websocket_path: str | None = "/ws",
    heartbeat: float = 15.0,
    retry: float = 3.0,
) -> list[BaseRoute]:
    """The SSE route (``GET path``) and the WebSocket route (``websocket_path``).

    - ``authorize(conn, channels)``: which exact channels a connection may receive.
    - ``authorize_patterns(conn, patterns)``: which glob patterns (default: none); it must
      grant a pattern only if every channel the pattern can match may be read (see
      :func:`pattern_prefix` and the module docstring).
    - ``allowed_origins``: browser origins allowed to open the WebSocket (default: the
      request's own host; a list of ``"https://host[:port]"``; ``"*"`` for any).
    """
    routes: list[BaseRoute] = [
        Route(
            path,
            sse_endpoint(
                bus,
                authorize=authorize,
                authorize_patterns=authorize_patterns,
                heartbeat=heartbeat,
                retry=retry,
            ),
            methods=["GET"],
        )
    ]
    if websocket_path is not None:
        endpoint = websocket_endpoint(
            bus,
            authorize=authorize,
            authorize_patterns=authorize_patterns,
            allowed_origins=allowed_origins,
        )
        routes.append(WebSocketRoute(websocket_path, endpoint))
    return routes
