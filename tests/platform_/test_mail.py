"""The SMTP sink keeps what it receives (bounded, readable from any process); the email job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

import redkit
from redkit.platform.mail import (
    MAX_BODY_CHARS,
    MailSink,
    SmtpTarget,
    email_job,
    received,
    send_email,
)

pytestmark = pytest.mark.standalone_only


@pytest.fixture
async def sink(rk: redkit.Redkit) -> AsyncIterator[MailSink]:
    server = await MailSink(rk, keep=3, max_message_bytes=64 * 1024).start()
    yield server
    await server.stop()


async def _send(sink: MailSink, subject: str, text: str = "hello") -> None:
    await send_email(
        SmtpTarget(sink.url), sender="a@example.com", to="b@example.com", subject=subject, text=text
    )


async def test_a_message_sent_through_smtp_is_read_back(
    sink: MailSink, rk: redkit.Redkit, redis_url: str
) -> None:
    await _send(sink, "Welcome", "Hi Ada,\nwelcome aboard.")
    # Another process (another client) reads it from Valkey.
    async with redkit.connect(redis_url, namespace=rk.namespace) as other:
        [mail] = await received(other)
    assert mail["subject"] == "Welcome"
    assert mail["from"] == "a@example.com"
    assert mail["to"] == ["b@example.com"]
    assert mail["text"].strip() == "Hi Ada,\nwelcome aboard."


async def test_the_sink_keeps_only_the_newest_messages(sink: MailSink, rk: redkit.Redkit) -> None:
    for n in range(5):
        await _send(sink, f"m{n}")
    assert [m["subject"] for m in await received(rk)] == ["m4", "m3", "m2"]


async def test_a_long_text_is_cut_and_an_oversized_message_refused(
    sink: MailSink, rk: redkit.Redkit
) -> None:
    await _send(sink, "long", "x" * (MAX_BODY_CHARS + 100))
    [mail] = await received(rk)
    assert mail["truncated"] is True
    assert len(mail["text"]) == MAX_BODY_CHARS
    with pytest.raises(aiosmtplib.SMTPException):
        await _send(sink, "huge", "y" * (200 * 1024))
    assert len(await received(rk)) == 1


async def test_a_header_injection_is_refused_before_sending(sink: MailSink) -> None:
    with pytest.raises(redkit.InvalidInput):
        await _send(sink, "hi\r\nBcc: everyone@example.com")


async def test_the_email_job_sends_through_the_worker(sink: MailSink, rk: redkit.Redkit) -> None:
    job = await rk.queue("email").enqueue(
        "email", {"to": "new@example.com", "subject": "Welcome", "text": "hi"}
    )
    worker = rk.worker(queues=["email"], functions={"email": email_job(SmtpTarget(sink.url))})
    running = asyncio.create_task(worker.run())
    try:
        assert await job.result(timeout=20) == {"sent_to": "new@example.com"}
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    [mail] = await received(rk)
    assert mail["to"] == ["new@example.com"]


def test_an_smtp_url_is_checked() -> None:
    target = SmtpTarget("smtps://u%40x:p%3A@relay.example.com")
    assert (target.hostname, target.port, target.use_tls) == ("relay.example.com", 465, True)
    assert (target.username, target.password) == ("u@x", "p:")
    with pytest.raises(redkit.ConfigurationError):
        SmtpTarget("http://relay.example.com")
