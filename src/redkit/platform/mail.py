"""E-mail: the SMTP sink (aiosmtpd) that keeps what it receives, and the ``email`` job.

The sink listens on a loopback port and accepts every message (it delivers nothing). It keeps
each message as an event on the notification channel ``mail:received`` of the platform's
namespace: the bus's history is a stream trimmed to the newest ``keep`` entries (MAXLEN), so
the store is bounded and any process (the dashboard, ``GET /api/admin/mail``) can list it with
:func:`received`, or watch it live with ``bus.subscribe("mail:received")``. A message's text is
cut to :data:`MAX_BODY_CHARS` characters before it is kept; one bigger than
``max_message_bytes`` is refused by the SMTP server itself (552).

:func:`send_email` sends through aiosmtplib to the sink or to a real relay (``--smtp-url``);
:func:`email_job` makes the ``email`` job function the worker runs.
"""

from __future__ import annotations

import asyncio
import email.policy
import weakref
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from redkit import NotificationBus, Redkit
from redkit.errors import ConfigurationError, InvalidInput, RedkitError

__all__ = [
    "MAIL_CHANNEL",
    "MAX_BODY_CHARS",
    "MailSink",
    "SmtpTarget",
    "email_job",
    "received",
    "send_email",
]

MAIL_CHANNEL = "mail:received"
MAX_BODY_CHARS = 16_000
DEFAULT_KEEP = 500


def mail_bus(rk: Redkit, keep: int = DEFAULT_KEEP) -> NotificationBus:
    """The bus whose ``mail:received`` history holds the kept messages (newest ``keep``)."""
    return rk.notifications(history=keep)


async def received(rk: Redkit, count: int = 50) -> list[dict[str, Any]]:
    """The newest ``count`` messages the sink kept, newest first."""
    events = await mail_bus(rk).history(MAIL_CHANNEL, count=count)
    return [{"id": e.id, "time": e.time, **dict(e.data)} for e in reversed(events)]


class _Handler:
    def __init__(self, bus: NotificationBus) -> None:
        self.bus = bus
        self.parser = BytesParser(policy=email.policy.default)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content or "").encode()
        message = self.parser.parsebytes(raw)
        body = message.get_body(preferencelist=("plain", "html"))
        # SMTP carries CRLF line ends; the kept text uses "\n" as Python does.
        text = body.get_content().replace("\r\n", "\n") if body is not None else ""
        record = {
            "from": str(envelope.mail_from or ""),
            "to": [str(r) for r in envelope.rcpt_tos][:50],
            "subject": str(message.get("Subject", ""))[:500],
            "text": text[:MAX_BODY_CHARS],
            "truncated": len(text) > MAX_BODY_CHARS,
            "bytes": len(raw),
        }
        try:
            await self.bus.publish(MAIL_CHANNEL, record)
        except RedkitError:
            # The sender retries on a 4xx; nothing was kept.
            return "451 Requested action aborted: the sink cannot store messages now"
        return "250 Message accepted"


class MailSink:
    """An SMTP server on ``host`` (loopback) that keeps what it receives (bounded).

    ``sink = await MailSink(rk).start()``; ``sink.url`` is ``smtp://127.0.0.1:<port>``;
    ``await sink.stop()``.
    """

    def __init__(
        self,
        rk: Redkit,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keep: int = DEFAULT_KEEP,
        max_message_bytes: int = 1024 * 1024,
    ) -> None:
        self.rk = rk
        self.host = host
        self.port = port
        self.keep = keep
        self.max_message_bytes = max_message_bytes
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<MailSink {self.url} {'running' if self._server else 'stopped'}>"

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def start(self) -> MailSink:
        handler = _Handler(mail_bus(self.rk, self.keep))
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            smtp = SMTP(
                handler,
                data_size_limit=self.max_message_bytes,
                hostname="redkit-mail-sink",
                enable_SMTPUTF8=True,
                timeout=60,
                loop=loop,
            )
            self._connections.add(smtp)
            return smtp

        self._server = await loop.create_server(protocol, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Connections still open (a client mid-message) are cut: stopping must not hang.
            for smtp in list(self._connections):
                if smtp.transport is not None:
                    smtp.transport.close()
            await self._server.wait_closed()
            self._server = None


class SmtpTarget:
    """Where e-mail goes: ``smtp://[user:password@]host:port`` (STARTTLS when the server
    offers it) or ``smtps://...`` (TLS from the first byte)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigurationError(f"not an SMTP URL (smtp://host:port): {parts.netloc!r}")
        self.url = url
        self.hostname = parts.hostname
        self.use_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def __repr__(self) -> str:
        return f"<SmtpTarget {'smtps' if self.use_tls else 'smtp'}://{self.hostname}:{self.port}>"


async def send_email(
    target: SmtpTarget,
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    timeout: float = 30,  # noqa: ASYNC109 - aiosmtplib's own per-operation timeout
) -> None:
    """Send one plain-text message (aiosmtplib). Raises aiosmtplib's errors on refusal."""
    for field, value in (("to", to), ("subject", subject), ("sender", sender)):
        if not isinstance(value, str) or "\n" in value or "\r" in value or not value:
            raise InvalidInput(f"e-mail {field} must be one non-empty line")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    await aiosmtplib.send(
        message,
        hostname=target.hostname,
        port=target.port,
        username=target.username,
        password=target.password,
        use_tls=target.use_tls,
        timeout=timeout,
    )


def email_job(
    target: SmtpTarget, sender: str = "redkit <noreply@redkit.localhost>"
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """The ``email`` job function: payload ``{to, subject, text}``; a refusal raises, so the
    queue retries it with backoff."""

    async def email(payload: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise InvalidInput("an email job's payload is an object {to, subject, text}")
        await send_email(
            target,
            sender=sender,
            to=str(payload.get("to", "")),
            subject=str(payload.get("subject", "")),
            text=str(payload.get("text", "")),
        )
        return {"sent_to": payload.get("to")}

    return email
