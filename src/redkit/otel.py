"""OpenTelemetry tracing for redkit (the ``redkit[otel]`` extra): spans for each operation of
the primitives, and the trace context carried through jobs and notifications.

Switch it on per client, when connecting or later::

    rk = await redkit.connect(tracing=True)        # or REDKIT_TRACING=1 in the environment
    redkit.otel.instrument(rk, tracer_provider=provider)    # an existing client, a provider

**Off by default, and explicit.** Tracing is a choice made where the client is made, not a
side effect of what happens to be installed: opentelemetry-api arrives as a dependency of
many packages, and an application that has it (even with an SDK configured for its own
spans) would otherwise find every rate-limit check and cache hit of redkit in its traces,
with the volume and cost that brings. Switched on, redkit uses the *global* tracer provider
unless given one, as OpenTelemetry instrumentations do: until the application configures the
SDK that provider is OpenTelemetry's placeholder, and redkit makes no span at all (one check
per operation, well under a microsecond); from the moment the SDK is set up, spans start. A
trace context that arrives without an SDK (a propagator alone) still travels on with jobs
and notifications. With tracing off (the default) ``rk.tracing`` is ``None``,
:mod:`redkit.otel` is never imported, and an operation pays one attribute read and one call
(see :mod:`redkit._trace`, the hook the primitives use).

**What a span is.** One per redkit operation (``session.get``, ``cache.get``,
``ratelimit.hit``, ``lock.acquire``, ...), which is one Lua script round trip, or for a lock
a wait made of several: not one per Redis command (opentelemetry-instrumentation-redis gives
that view; its ``EVALSHA`` spans then nest under redkit's). The database conventions apply:
kind ``CLIENT``; ``db.system.name`` ``"redis"`` (Valkey speaks its protocol and has no value
of its own in the registry; ``redkit.server`` says which it is); ``db.operation.name`` the
redkit operation, which is also the span name; ``db.namespace`` the database index, as the
Redis conventions define it (``"0"``); ``server.address`` and ``server.port`` the server (the
first host of a Cluster's or Sentinel's URL); ``redkit.namespace`` the key prefix; and one
attribute naming the object (``redkit.session_store``, ``redkit.cache``, ``redkit.limiter``,
``redkit.lock``, ``redkit.semaphore``). A failed operation has status ERROR and
``error.type``, the exception's class name; the exception's message is not recorded (it may
quote input). Jobs and notifications follow the messaging conventions: ``enqueue <queue>``
is a ``PRODUCER`` span and ``process <queue>`` (the worker running the job) a ``CONSUMER``
span; ``publish`` a ``PRODUCER`` span and ``deliver`` (a process handing an event to its
subscribers) a ``CONSUMER`` one, with ``messaging.system`` ``"redkit"``,
``messaging.destination.name`` (the queue or channel), ``messaging.operation.name`` and
``.type``, ``messaging.message.id`` (the job or event id).

**Never in a span:** a session id or any token, a cache key, a payload, job arguments or
results, event data, an exception's message.

**Trace context through a job and a notification.** ``enqueue`` stores the W3C
``traceparent`` of its span with the job (one field of 55 characters; nothing when no span
is recording: tracing off, or no SDK); the worker's ``process`` span is a child of it, and
links to it, so a trace shows the request and the job it caused, each attempt of it. A
publish carries its ``traceparent`` in the live message and in history, and the ``deliver``
span is its child; :func:`event_context` gives a subscriber the publisher's context to
continue from. Both are read as untrusted input (anyone who can write the server can write
them): more than :data:`MAX_TRACEPARENT` bytes, not ASCII, or not a valid W3C traceparent
(the propagator's own parser decides) and it is ignored: the span starts a new trace, and
nothing fails. Only ``traceparent`` travels, never ``tracestate`` or baggage: bounded, and
nothing of the application's leaks into the queue.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from redkit._version import __version__
from redkit.errors import ConfigurationError

try:
    from opentelemetry import context, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - the test environment has the extra
    raise ImportError(
        "redkit.otel needs OpenTelemetry: pip install 'redkit[otel]' (opentelemetry-api), "
        "and configure an SDK to export the spans"
    ) from exc

if TYPE_CHECKING:
    from redkit.jobs import Job
    from redkit.notify import Event

__all__ = [
    "MAX_TRACEPARENT",
    "Tracing",
    "event_context",
    "instrument",
    "read_traceparent",
    "uninstrument",
]

MAX_TRACEPARENT = 128
"""Longest traceparent redkit reads back (a version 00 one is 55 characters; later versions
may append fields): anything longer is ignored unread."""

_PROPAGATOR = TraceContextTextMapPropagator()
_SCOPE = "redkit"


class _HasTracing(Protocol):
    tracing: Tracing | None
    url: str
    namespace: str
    server_kind: str


# -- the operations: what a span of each says, in one place ---------------------------------

Attrs = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _Op:
    kind: SpanKind
    object_attrs: Callable[[Any], Attrs]
    """Attributes of the primitive object (its name...), computed once per object."""
    call_attrs: Callable[[tuple[Any, ...], Mapping[str, Any]], Attrs] | None = None
    """Attributes of one call (a channel name), from its arguments: never a secret."""
    result_attrs: Callable[[Any], Attrs] | None = None
    """Attributes of the outcome (found, allowed, the new job's id)."""
    span_name: Callable[[Any], str] | None = None
    """The span's name from the object, when it is not the operation's name."""
    messaging: str | None = None
    """The messaging operation type (``send``) for a messaging span."""


def _named(attribute: str) -> Callable[[Any], Attrs]:
    return lambda obj: {attribute: str(obj.name)}


def _queue(queue: Any) -> Attrs:
    return {
        "messaging.system": "redkit",
        "messaging.destination.name": str(queue.name),
        "redkit.queue": str(queue.name),
    }


def _channel(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Attrs:
    channel = args[0] if args else kwargs.get("channel")
    return {"messaging.destination.name": str(channel)[:256]}


def _enqueued(job: Any) -> Attrs:
    return {"messaging.message.id": str(job.id), "redkit.job.function": str(job.function)}


def _lookup(found: Any) -> Attrs:
    # get.lua's status: 2 hit, 3 hit + early refresh, 4 and 5 stale, the rest misses.
    return {"redkit.cache.hit": int(found.status) in (2, 3, 4, 5)}


_STORE = _named("redkit.session_store")
_CACHE = _named("redkit.cache")
_LIMITER = _named("redkit.limiter")
_LOCK = _named("redkit.lock")
_CLIENT = SpanKind.CLIENT


def _allowed(decision: Any) -> Attrs:
    return {"redkit.ratelimit.allowed": bool(decision.allowed)}


def _found(session: Any) -> Attrs:
    return {"redkit.session.found": session is not None}


OPERATIONS: dict[str, _Op] = {
    "session.create": _Op(_CLIENT, _STORE),
    "session.get": _Op(_CLIENT, _STORE, result_attrs=_found),
    "session.update": _Op(_CLIENT, _STORE),
    "session.rotate": _Op(_CLIENT, _STORE),
    "session.revoke": _Op(_CLIENT, _STORE),
    "session.revoke_all": _Op(_CLIENT, _STORE),
    "cache.get": _Op(_CLIENT, _CACHE, result_attrs=_lookup),
    "cache.set": _Op(_CLIENT, _CACHE),
    "cache.delete": _Op(_CLIENT, _CACHE),
    "cache.invalidate": _Op(_CLIENT, _CACHE),
    "ratelimit.hit": _Op(_CLIENT, _LIMITER, result_attrs=_allowed),
    "ratelimit.peek": _Op(_CLIENT, _LIMITER, result_attrs=_allowed),
    "ratelimit.reset": _Op(_CLIENT, _LIMITER),
    "lock.acquire": _Op(_CLIENT, _LOCK),
    "lock.release": _Op(_CLIENT, _LOCK),
    "lock.extend": _Op(_CLIENT, _LOCK),
    "semaphore.acquire": _Op(_CLIENT, _named("redkit.semaphore")),
    "semaphore.release": _Op(
        _CLIENT, lambda permit: {"redkit.semaphore": str(permit.semaphore.name)}
    ),
    "job.enqueue": _Op(
        SpanKind.PRODUCER,
        _queue,
        result_attrs=_enqueued,
        span_name=lambda queue: f"enqueue {queue.name}",
        messaging="send",
    ),
    "job.enqueue_many": _Op(
        SpanKind.PRODUCER,
        _queue,
        result_attrs=lambda jobs: {"messaging.batch.message_count": len(jobs)},
        span_name=lambda queue: f"enqueue {queue.name}",
        messaging="send",
    ),
    "notify.publish": _Op(
        SpanKind.PRODUCER,
        lambda bus: {"messaging.system": "redkit"},
        call_attrs=_channel,
        result_attrs=lambda event_id: {"messaging.message.id": str(event_id)},
        span_name=lambda bus: "publish",
        messaging="send",
    ),
}


# -- the trace context, written and read --------------------------------------------------


def read_traceparent(raw: object) -> Context | None:
    """The context a stored traceparent names, or None when it is absent or not valid.

    ``raw`` comes from the server, which anyone with write access to it could have written:
    it is bounded, decoded strictly and parsed by OpenTelemetry's W3C propagator; anything
    it does not accept gives None (the caller then starts a new trace).
    """
    if isinstance(raw, bytes | bytearray):
        if not raw or len(raw) > MAX_TRACEPARENT:
            return None
        try:
            text = bytes(raw).decode("ascii")
        except UnicodeDecodeError:
            return None
    elif isinstance(raw, str):
        if not raw or len(raw) > MAX_TRACEPARENT or not raw.isascii():
            return None
        text = raw
    else:
        return None
    found = _PROPAGATOR.extract({"traceparent": text}, context=Context())
    if not trace.get_current_span(found).get_span_context().is_valid:
        return None
    return found


def event_context(event: Event) -> Context | None:
    """The publisher's trace context of a delivered ``event``, to continue its trace::

        async for event in sub:
            parent = redkit.otel.event_context(event)
            with tracer.start_as_current_span("on status", context=parent):
                ...

    None when the event carries none (published without tracing, or an invalid one).
    """
    return read_traceparent(event.traceparent)


def _server_attributes(rk: _HasTracing) -> Attrs:
    attrs: Attrs = {
        "db.system.name": "redis",
        "redkit.server": rk.server_kind,
        "redkit.namespace": rk.namespace,
    }
    parts = urlsplit(rk.url)
    if parts.scheme == "unix":
        attrs["server.address"] = parts.path
        return attrs
    hostinfo = parts.netloc.rpartition("@")[2].split(",")[0].strip()
    if hostinfo.startswith("["):
        host, _, rest = hostinfo[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, _, port_text = hostinfo.partition(":")
    if host:
        attrs["server.address"] = host
        attrs["server.port"] = int(port_text) if port_text.isdigit() else 6379
    index = parts.path.strip("/")
    attrs["db.namespace"] = index if index.isdigit() else "0"
    return attrs


class Tracing:
    """The spans of one :class:`~redkit.Redkit` (``rk.tracing``); made by :func:`instrument`."""

    def __init__(self, rk: _HasTracing, tracer_provider: Any = None) -> None:
        self.tracer: Tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self.attributes = _server_attributes(rk)
        """What every span of this client says (the server, the namespace)."""
        self._provider = tracer_provider
        self._recording = tracer_provider is not None and not isinstance(
            tracer_provider, trace.NoOpTracerProvider
        )

    def __repr__(self) -> str:
        return f"<redkit Tracing {self.attributes.get('server.address', '')}>"

    def _object_attrs(self, operation: str, op: _Op, obj: Any) -> Attrs:
        # Per primitive object, computed once: an object keeps its name for its life.
        cache: dict[str, Attrs] | None = getattr(obj, "_redkit_span_attrs", None)
        if cache is None:
            cache = {}
            with suppress(AttributeError):  # no __dict__: computed on every call
                obj._redkit_span_attrs = cache
        attrs = cache.get(operation)
        if attrs is None:
            attrs = {**self.attributes, **op.object_attrs(obj), "db.operation.name": operation}
            if op.messaging is not None:
                attrs["messaging.operation.type"] = op.messaging
                attrs["messaging.operation.name"] = operation.partition(".")[2]
            cache[operation] = attrs
        return attrs

    def _live(self) -> bool:
        """Whether a span could record. Not while the global provider is OpenTelemetry's
        placeholder (no SDK configured yet): then redkit makes no span at all, which saves
        the API's own no-op work (a few microseconds an operation); once an SDK is set up
        (it can be only once), spans start."""
        if self._recording:
            return True
        if self._provider is not None:
            return False  # a no-op provider given explicitly
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return False
        self._recording = True
        return True

    def _start(
        self, operation: str, op: _Op, obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Span:
        attrs = self._object_attrs(operation, op, obj)
        if op.call_attrs is not None:
            attrs = {**attrs, **op.call_attrs(args, kwargs)}
        name = operation if op.span_name is None else op.span_name(obj)
        return self.tracer.start_span(name, kind=op.kind, attributes=attrs)

    async def _run(
        self,
        operation: str,
        fn: Callable[..., Awaitable[Any]],
        obj: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        op = OPERATIONS[operation]
        span = self._start(operation, op, obj, args, kwargs)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await fn(obj, *args, **kwargs)
            if op.result_attrs is not None and span.is_recording():
                span.set_attributes(op.result_attrs(result))
            return result
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            context.detach(token)
            span.end()

    def run_async(
        self,
        operation: str,
        fn: Callable[..., Awaitable[Any]],
        obj: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Awaitable[Any]:
        """``fn(obj, *args, **kwargs)`` in a span of ``operation`` (see :mod:`redkit._trace`)."""
        if not self._recording and not self._live():
            return fn(obj, *args, **kwargs)
        return self._run(operation, fn, obj, args, kwargs)

    def run_sync(
        self,
        operation: str,
        fn: Callable[..., Any],
        obj: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The sync API's twin of :meth:`run_async`."""
        if not self._recording and not self._live():
            return fn(obj, *args, **kwargs)
        op = OPERATIONS[operation]
        span = self._start(operation, op, obj, args, kwargs)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = fn(obj, *args, **kwargs)
            if op.result_attrs is not None and span.is_recording():
                span.set_attributes(op.result_attrs(result))
            return result
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            context.detach(token)
            span.end()

    # -- context carried by jobs and events ------------------------------------------------

    @staticmethod
    def traceparent() -> str:
        """The current span's W3C traceparent, or ``""`` when no span is recording there."""
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return ""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent", "")

    async def process_job(self, job: Job, run: Callable[[], Awaitable[Any]]) -> Any:
        """Run a job's function in a ``process <queue>`` span, child of its enqueue span."""
        if not self._recording and not self._live():
            return await run()
        parent = read_traceparent(job._traceparent)
        links = [] if parent is None else [Link(trace.get_current_span(parent).get_span_context())]
        attrs = {
            **self.attributes,
            "messaging.system": "redkit",
            "messaging.destination.name": job.queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": job.id,
            "redkit.queue": job.queue,
            "redkit.job.function": job.function,
            "redkit.job.attempt": job.attempts,
        }
        with self.tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent if parent is not None else Context(),
            kind=SpanKind.CONSUMER,
            attributes=attrs,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await run()
            except BaseException as exc:
                _failed(span, exc)
                raise

    def delivered(self, event: Event, subscribers: int) -> None:
        """A ``deliver`` span for an event this process hands to its subscribers."""
        if not self._recording and not self._live():
            return
        parent = read_traceparent(event.traceparent)
        links = [] if parent is None else [Link(trace.get_current_span(parent).get_span_context())]
        now = time.time_ns()
        span = self.tracer.start_span(
            "deliver",
            context=parent if parent is not None else Context(),
            kind=SpanKind.CONSUMER,
            attributes={
                **self.attributes,
                "messaging.system": "redkit",
                "messaging.destination.name": event.channel,
                "messaging.operation.type": "receive",
                "messaging.operation.name": "deliver",
                "messaging.message.id": event.id,
                "redkit.subscribers": subscribers,
            },
            links=links,
            start_time=now,
        )
        span.end(end_time=now)


def _failed(span: Span, exc: BaseException) -> None:
    name = type(exc).__qualname__
    span.set_attribute("error.type", name)
    span.set_status(Status(StatusCode.ERROR, name))


def instrument(rk: Any, tracer_provider: Any = None) -> Tracing:
    """Switch tracing on for ``rk`` (a :class:`redkit.Redkit` or a sync one); return it.

    ``tracer_provider``: where the spans go; by default the global one (a no-op until the
    application configures the OpenTelemetry SDK). Calling it again replaces the provider.
    """
    if not hasattr(rk, "tracing"):
        raise ConfigurationError(f"{rk!r} is not a redkit client")
    tracing = Tracing(rk, tracer_provider)
    rk.tracing = tracing
    return tracing


def uninstrument(rk: Any) -> None:
    """Switch tracing off for ``rk``: its operations make no spans from now on."""
    rk.tracing = None
