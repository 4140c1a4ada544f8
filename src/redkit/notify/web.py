"""Notifications to browsers: Server-Sent Events and WebSocket routes for Starlette/FastAPI.

::

    from redkit.notify.web import notification_routes

    async def authorize(conn: HTTPConnection, names: list[str]) -> list[str]:
        user = await current_user(conn)                      # your auth
        return [n for n in names if n == "system:alert" or user.may_read(n)]

    app.router.routes.extend(notification_routes(bus, authorize=authorize))
    # or: app.mount("/notify", Router(notification_routes(bus, authorize=authorize)))

A client asks for channels and patterns in the query string:
``GET /events?channel=system:alert&channel=project:p1&pattern=deployment:p1:*``
(``/ws?...`` for the WebSocket). ``authorize(conn, names)`` gets the requested names
(channels and patterns as written) and returns those the connection may receive; the rest
are dropped, and if none is left the answer is 403 (WebSocket: close code 1008). It may be
a plain or an ``async`` function. There is no default: pass :func:`allow_all` explicitly for
public channels.

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
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from redkit.errors import InvalidInput, RedkitError
from redkit.notify.bus import NotificationBus, Subscription
from redkit.notify.events import Event

__all__ = [
    "Authorize",
    "allow_all",
    "notification_routes",
    "sse_endpoint",
    "websocket_endpoint",
]

log = logging.getLogger("redkit.notify")

Authorize = Callable[[HTTPConnection, list[str]], Iterable[str] | Awaitable[Iterable[str]]]
"""``authorize(conn, requested_names) -> allowed names`` (sync or async)."""

BusSource = NotificationBus | Callable[[HTTPConnection], NotificationBus]
"""The bus, or a function of the connection that returns it (for a bus made in a lifespan:
``lambda conn: conn.app.state.bus``)."""


def allow_all(conn: HTTPConnection, names: list[str]) -> list[str]:
    """An ``authorize`` hook that lets everyone receive every channel (public channels)."""
    return names


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _open(
    source: BusSource, conn: HTTPConnection, authorize: Authorize, last_event_id: str | None
) -> Subscription:
    """The (not yet entered) subscription this connection asked for and may have."""
    channels = conn.query_params.getlist("channel")
    patterns = conn.query_params.getlist("pattern")
    if not channels and not patterns:
        raise _Refused(400, "name at least one channel (?channel=...) or pattern (?pattern=...)")
    verdict = authorize(conn, [*channels, *patterns])
    if inspect.isawaitable(verdict):
        verdict = await verdict
    allowed = set(verdict)
    channels = [c for c in channels if c in allowed]
    patterns = [p for p in patterns if p in allowed]
    if not channels and not patterns:
        raise _Refused(403, "not allowed to receive any of the requested channels")
    bus = source if isinstance(source, NotificationBus) else source(conn)
    try:
        return bus.subscribe(*channels, patterns=patterns, last_event_id=last_event_id or None)
    except InvalidInput as exc:
        raise _Refused(400, str(exc)) from None


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
    heartbeat: float = 15.0,
    retry: float = 3.0,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that streams the requested channels as Server-Sent Events."""
    retry_line = f"retry: {round(retry * 1000)}\n\n".encode()

    async def endpoint(request: Request) -> Response:
        last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        try:
            sub = await _open(bus, request, authorize, last_id)
        except _Refused as exc:
            return PlainTextResponse(str(exc), status_code=exc.status)

        async def stream() -> AsyncIterator[bytes]:
            try:
                async with sub:
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
                # Headers are sent: tell the client in-band; EventSource reconnects by itself.
                log.warning("notify SSE stream ended: %s", exc)
                message = orjson.dumps({"error": str(exc)})
                yield retry_line + b"event: error\ndata: " + message + b"\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return endpoint


def websocket_endpoint(
    bus: BusSource, *, authorize: Authorize
) -> Callable[[WebSocket], Awaitable[None]]:
    """A Starlette WebSocket endpoint that sends the requested channels as JSON frames."""

    async def endpoint(websocket: WebSocket) -> None:
        try:
            sub = await _open(
                bus, websocket, authorize, websocket.query_params.get("last_event_id")
            )
        except _Refused as exc:
            await websocket.close(code=1008 if exc.status == 403 else 1003, reason=str(exc))
            return
        try:
            await sub.__aenter__()
        except RedkitError as exc:
            log.warning("notify WebSocket refused: %s", exc)
            await websocket.close(code=1011, reason=str(exc)[:120])
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
            code, reason = 1011, str(error)[:120]
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason)


def notification_routes(
    bus: BusSource,
    *,
    authorize: Authorize,
    path: str = "/events",
    websocket_path: str | None = "/ws",
    heartbeat: float = 15.0,
    retry: float = 3.0,
) -> list[BaseRoute]:
    """The SSE route (``GET path``) and the WebSocket route (``websocket_path``)."""
    routes: list[BaseRoute] = [
        Route(
            path,
            sse_endpoint(bus, authorize=authorize, heartbeat=heartbeat, retry=retry),
            methods=["GET"],
        )
    ]
    if websocket_path is not None:
        routes.append(WebSocketRoute(websocket_path, websocket_endpoint(bus, authorize=authorize)))
    return routes
