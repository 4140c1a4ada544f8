"""OpenTelemetry tracing (redkit.otel): spans of the primitives, and the trace context that a job
and a notification carry from the code that caused them to the code that handles them.

Spans are read from the SDK's in-memory exporter, through a tracer provider given to
``instrument`` (never the global one, which other tests must find untouched).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import redkit
import redkit.otel
import redkit.sync
from jobs.helpers import running
from redkit.errors import ConfigurationError, LockNotAcquired

PAYLOAD_MARK = "PAYLOAD-7f3a9c"
"""Put in every payload, value and key a test writes: no span may carry it."""


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
async def traced(rk: redkit.Redkit, provider: TracerProvider) -> AsyncIterator[redkit.Redkit]:
    """``rk`` with tracing on, into the in-memory exporter."""
    redkit.otel.instrument(rk, tracer_provider=provider)
    yield rk
    redkit.otel.uninstrument(rk)


def spans(exporter: InMemorySpanExporter, name: str | None = None) -> list[ReadableSpan]:
    found = list(exporter.get_finished_spans())
    return found if name is None else [s for s in found if s.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = spans(exporter, name)
    return span


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def take_one(sub: Any) -> Any:
    return await asyncio.wait_for(anext(aiter(sub)), 10)


# -- what a span says ------------------------------------------------------------------------


@pytest.mark.cluster
async def test_a_rate_limit_check_is_a_client_span_with_the_database_conventions(
    traced: redkit.Redkit, exporter: InMemorySpanExporter
) -> None:
    limiter = traced.rate_limiter(10, 60, name="api")
    await limiter.hit("user:1")
    span = only(exporter, "ratelimit.hit")
    assert span.kind is SpanKind.CLIENT
    # The first host of the URL (a Cluster's URL names several).
    host, _, port = urlsplit(traced.url).netloc.split(",")[0].rpartition(":")
    expected = {
        "db.system.name": "redis",
        "db.operation.name": "ratelimit.hit",
        "db.namespace": "0",
        "server.address": host,
        "server.port": int(port),
        "redkit.namespace": traced.namespace,
        "redkit.server": traced.server_kind,
        "redkit.limiter": "api",
        "redkit.ratelimit.allowed": True,
    }
    assert attrs(span) == expected
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.cluster
async def test_each_primitive_operation_has_its_span(
    traced: redkit.Redkit, exporter: InMemorySpanExporter
) -> None:
    store = traced.sessions()
    session = await store.create("u1", {"k": "v"})
    assert await store.get(session.id) is not None
    assert await store.revoke(session.id)
    assert await store.get(session.id) is None

    cache = traced.cache(name="pages")
    await cache.set("home", "v")
    assert await cache.get("home") == "v"
    assert await cache.get("absent") is None
    await cache.invalidate("t")

    async with traced.lock("db:p1", ttl=5) as lock:
        assert lock.fencing_token
    async with traced.semaphore("deploys", limit=2):
        pass

    names = [s.name for s in spans(exporter)]
    for name in (
        "session.create",
        "session.revoke",
        "cache.set",
        "cache.invalidate",
        "lock.acquire",
        "lock.release",
        "semaphore.acquire",
        "semaphore.release",
    ):
        assert name in names
    found = [attrs(s)["redkit.session.found"] for s in spans(exporter, "session.get")]
    assert found == [True, False]
    hits = [attrs(s)["redkit.cache.hit"] for s in spans(exporter, "cache.get")]
    assert hits == [True, False]
    assert attrs(spans(exporter, "cache.get")[0])["redkit.cache"] == "pages"
    assert attrs(only(exporter, "lock.acquire"))["redkit.lock"] == "db:p1"
    assert attrs(only(exporter, "semaphore.release"))["redkit.semaphore"] == "deploys"
    assert all(s.kind is SpanKind.CLIENT for s in spans(exporter))
    assert all(attrs(s)["db.system.name"] == "redis" for s in spans(exporter))


async def test_a_failed_operation_has_an_error_status_and_type_but_no_message(
    traced: redkit.Redkit, exporter: InMemorySpanExporter
) -> None:
    async with traced.lock("busy", ttl=5):
        with pytest.raises(LockNotAcquired):
            await traced.lock("busy", ttl=5).acquire(timeout=0)
    failed = [
        s for s in spans(exporter, "lock.acquire") if s.status.status_code is StatusCode.ERROR
    ]
    [span] = failed
    assert attrs(span)["error.type"] == "LockNotAcquired"
    assert span.status.description == "LockNotAcquired"
    assert not span.events  # no recorded exception: its message may quote input


async def test_no_span_carries_a_session_id_a_key_or_a_payload(
    traced: redkit.Redkit, exporter: InMemorySpanExporter
) -> None:
    store = traced.sessions()
    session = await store.create("u1", {"note": PAYLOAD_MARK})
    await store.get(session.id)
    await store.update(session.id, {"note": PAYLOAD_MARK + "2"})
    rotated = await store.rotate(session.id)
    await store.revoke(rotated.id)
    cache = traced.cache()
    await cache.set(f"page:{PAYLOAD_MARK}", {"body": PAYLOAD_MARK})
    await cache.get(f"page:{PAYLOAD_MARK}")
    await cache.delete(f"page:{PAYLOAD_MARK}")
    await traced.rate_limiter(5, 60).hit(f"ip:{PAYLOAD_MARK}")
    await traced.queue("email").enqueue("send", {"to": PAYLOAD_MARK})
    await traced.notifications().publish("alerts", {"text": PAYLOAD_MARK})

    assert len(spans(exporter)) == 11  # one per operation above
    secrets = (session.id, rotated.id, PAYLOAD_MARK)
    for span in spans(exporter):
        for key, value in attrs(span).items():
            assert not any(s in str(value) for s in secrets), (span.name, key)
        assert not any(s in span.name for s in secrets)


def test_the_sync_api_makes_the_same_spans(
    redis_url: str, namespace: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with redkit.sync.connect(redis_url, namespace) as rk:
        redkit.otel.instrument(rk, tracer_provider=provider)
        store = rk.sessions()
        session = store.create("u1", {})
        assert store.get(session.id) is not None
        for key in rk.redis.scan_iter(match=rk.keys.pattern, count=1000):
            rk.redis.unlink(key)
    span = only(exporter, "session.get")
    assert span.kind is SpanKind.CLIENT
    assert attrs(span)["redkit.session.found"] is True
    assert attrs(span)["db.operation.name"] == "session.get"


# -- trace context through a job -------------------------------------------------------------


@pytest.mark.cluster
async def test_a_job_runs_in_the_trace_of_the_request_that_enqueued_it(
    traced: redkit.Redkit, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")
    inner: list[trace.SpanContext] = []

    async def send(payload: Any) -> str:
        # The job's own spans are children of redkit's process span.
        with tracer.start_as_current_span("render") as span:
            inner.append(span.get_span_context())
        return "sent"

    queue = traced.queue("email")
    with tracer.start_as_current_span("POST /signup") as request:
        job = await queue.enqueue("send", {"to": PAYLOAD_MARK})
    worker = traced.worker([queue], {"send": send}, concurrency=1)
    async with running(worker):
        assert await job.result(timeout=10) == "sent"

    trace_id = request.get_span_context().trace_id
    enqueue = only(exporter, "enqueue email")
    process = only(exporter, "process email")
    assert enqueue.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert enqueue.context is not None
    assert process.context is not None
    assert enqueue.context.trace_id == trace_id
    assert process.context.trace_id == trace_id
    assert process.parent is not None
    assert process.parent.span_id == enqueue.context.span_id
    assert [link.context.span_id for link in process.links] == [enqueue.context.span_id]
    assert inner[0].trace_id == trace_id
    assert only(exporter, "render").parent.span_id == process.context.span_id  # type: ignore[union-attr]
    assert (
        attrs(enqueue).items()
        >= {
            "messaging.system": "redkit",
            "messaging.destination.name": "email",
            "messaging.operation.type": "send",
            "messaging.message.id": job.id,
            "redkit.queue": "email",
            "redkit.job.function": "send",
        }.items()
    )
    assert (
        attrs(process).items()
        >= {
            "messaging.operation.type": "process",
            "messaging.message.id": job.id,
            "redkit.job.attempt": 1,
        }.items()
    )


async def test_a_plain_def_job_sees_its_span_in_the_worker_thread(
    traced: redkit.Redkit, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def blocking(payload: Any) -> int:
        return trace.get_current_span().get_span_context().span_id

    queue = traced.queue("threads")
    job = await queue.enqueue("blocking")
    async with running(traced.worker([queue], {"blocking": blocking}, concurrency=1)):
        seen = await job.result(timeout=10)
    process = only(exporter, "process threads")
    assert process.context is not None
    assert seen == process.context.span_id


async def test_a_failing_job_marks_its_process_span_as_an_error(
    traced: redkit.Redkit, exporter: InMemorySpanExporter
) -> None:
    async def broken(payload: Any) -> None:
        raise ValueError(PAYLOAD_MARK)

    queue = traced.queue("broken")
    job = await queue.enqueue("broken", max_attempts=1)
    async with running(traced.worker([queue], {"broken": broken}, concurrency=1)):
        with pytest.raises(redkit.JobFailed):
            await job.result(timeout=10)
    span = only(exporter, "process broken")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "ValueError"
    assert PAYLOAD_MARK not in str(span.status.description)


@pytest.mark.parametrize(
    "forged",
    [
        b"garbage",
        b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01",  # all-zero trace id
        b"ff-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01",  # the forbidden version
        b"00-" + b"A" * 32 + b"-" + b"b" * 16 + b"-01",  # upper case hex
        b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01" + b"x" * 200,  # too long
        b"00-\xff\xfe" + b"a" * 30 + b"-" + b"b" * 16 + b"-01",  # not ASCII
        b"\x00" * 55,
    ],
)
async def test_a_forged_traceparent_on_a_job_is_ignored_and_the_job_starts_a_new_trace(
    traced: redkit.Redkit, exporter: InMemorySpanExporter, forged: bytes
) -> None:
    async def echo(payload: Any) -> Any:
        return payload

    queue = traced.queue("forged")
    job = await queue.enqueue("echo", 1)
    assert await traced.redis.hget(queue.job_key(job.id), "tp") is not None
    # Whoever can write the server writes the job's trace context.
    await traced.redis.hset(queue.job_key(job.id), "tp", forged)
    async with running(traced.worker([queue], {"echo": echo}, concurrency=1)):
        assert await job.result(timeout=10) == 1
    process = only(exporter, "process forged")
    assert process.parent is None
    assert not process.links
    assert process.context is not None
    assert process.context.trace_id != 0


# -- trace context through a notification ----------------------------------------------------


@pytest.mark.cluster
async def test_a_notification_is_delivered_in_the_trace_of_its_publisher(
    traced: redkit.Redkit, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")
    bus = traced.notifications()
    async with bus.subscribe("deployment:status") as sub:
        with tracer.start_as_current_span("POST /deploy") as request:
            event_id = await bus.publish("deployment:status", {"status": PAYLOAD_MARK})
        event = await take_one(sub)
    assert event.id == event_id
    assert event.data == {"status": PAYLOAD_MARK}
    trace_id = request.get_span_context().trace_id
    publish = only(exporter, "publish")
    assert publish.kind is SpanKind.PRODUCER
    assert attrs(publish)["messaging.destination.name"] == "deployment:status"
    assert attrs(publish)["messaging.message.id"] == event_id
    deliver = only(exporter, "deliver")
    assert deliver.kind is SpanKind.CONSUMER
    assert deliver.context is not None
    assert deliver.context.trace_id == trace_id
    assert publish.context is not None
    assert deliver.parent is not None
    assert deliver.parent.span_id == publish.context.span_id
    assert attrs(deliver)["messaging.message.id"] == event_id
    assert attrs(deliver)["redkit.subscribers"] == 1
    # The subscriber continues the publisher's trace from the event.
    context = redkit.otel.event_context(event)
    assert context is not None
    assert trace.get_current_span(context).get_span_context().span_id == publish.context.span_id


async def test_history_keeps_the_trace_context_of_an_event(
    traced: redkit.Redkit, provider: TracerProvider
) -> None:
    bus = traced.notifications()
    with provider.get_tracer("app").start_as_current_span("request") as request:
        await bus.publish("audit", {"n": 1})
    [event] = await bus.history("audit")
    context = redkit.otel.event_context(event)
    assert context is not None
    assert trace.get_current_span(context).get_span_context().trace_id == (
        request.get_span_context().trace_id
    )


async def test_a_forged_trace_context_in_a_live_message_is_ignored(
    traced: redkit.Redkit, exporter: InMemorySpanExporter
) -> None:
    bus = traced.notifications()
    async with bus.subscribe("chat") as sub:
        channel = traced.keys.group("ch", "chat").key()
        # Written by hand, as anyone who can PUBLISH could: a bad context, then good data.
        await traced.redis.publish(channel, b'99999999999999-0\nt:00-zz-not-a-context\n{"a":1}')
        event = await take_one(sub)
    assert event.data == {"a": 1}
    assert redkit.otel.event_context(event) is None
    deliver = only(exporter, "deliver")
    assert deliver.parent is None


async def test_messages_of_earlier_publishers_are_still_read(traced: redkit.Redkit) -> None:
    # "<id>\n<previous id>\n<data>": the line after the id is not a trace context.
    bus = traced.notifications()
    async with bus.subscribe("old") as sub:
        channel = traced.keys.group("ch", "old").key()
        await traced.redis.publish(channel, b"99999999999999-0\n99999999999998-0\n[1]")
        event = await take_one(sub)
    assert event.data == [1]
    assert event.traceparent is None


# -- off, or on without an SDK ---------------------------------------------------------------


async def test_tracing_is_off_unless_asked_for(rk: redkit.Redkit) -> None:
    assert rk.tracing is None
    assert rk.settings.tracing is False


async def test_tracing_on_without_an_sdk_stores_no_trace_context(rk: redkit.Redkit) -> None:
    # The global tracer provider is a no-op until the application configures the SDK.
    redkit.otel.instrument(rk)
    try:
        assert rk.tracing is not None
        queue = rk.queue("quiet")
        job = await queue.enqueue("f", {"x": 1})
        assert await rk.redis.hget(queue.job_key(job.id), "tp") is None
        bus = rk.notifications()
        await bus.publish("quiet", {"x": 1})
        entries: Any = await rk.redis.xrange(rk.keys.group("ch", "quiet").key("log"))
        [(_, fields)] = entries
        assert set(fields) == {b"d"}
        assert await rk.sessions().get("no-such-session") is None
    finally:
        redkit.otel.uninstrument(rk)


async def test_connect_with_tracing_uses_the_global_provider(
    redis_url: str, namespace: str
) -> None:
    async with redkit.connect(redis_url, namespace, tracing=True) as rk:
        assert isinstance(rk.tracing, redkit.otel.Tracing)
        assert await rk.rate_limiter(1, 60).hit("k")


def test_redkit_imports_and_works_without_opentelemetry(redis_url: str, namespace: str) -> None:
    # A fresh interpreter in which opentelemetry cannot be imported at all.
    code = f"""
import asyncio, sys
sys.modules["opentelemetry"] = None
import redkit, redkit.sync
from redkit.errors import ConfigurationError

async def main():
    async with redkit.connect({redis_url!r}, {namespace!r}) as rk:
        assert rk.tracing is None
        assert (await rk.rate_limiter(5, 60).hit("k")).allowed
        job = await rk.queue("q").enqueue("f", 1)
        await rk.notifications().publish("c", 1)
        await rk.redis.unlink(*[k async for k in rk.redis.scan_iter(match=rk.keys.pattern)])
    try:
        await redkit.connect({redis_url!r}, {namespace!r}, tracing=True)
    except ConfigurationError as exc:
        assert "redkit[otel]" in str(exc)
    else:
        raise AssertionError("tracing=True without OpenTelemetry must be refused")

asyncio.run(main())
assert not [m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m]]
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_instrument_refuses_what_is_not_a_client() -> None:
    with pytest.raises(ConfigurationError):
        redkit.otel.instrument(object())


def test_a_traceparent_is_read_only_when_valid() -> None:
    good = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    context = redkit.otel.read_traceparent(good.encode())
    assert context is not None
    assert trace.get_current_span(context).get_span_context().trace_id == int("a" * 32, 16)
    for bad in (None, 7, b"", "", good + "x" * 200, good.upper(), "é" + good[1:]):
        assert redkit.otel.read_traceparent(bad) is None
