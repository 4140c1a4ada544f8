"""Notifications: pub/sub with per-channel history, resume without gaps, and fan-out.

- :class:`NotificationBus` (``rk.notifications(history=100)``): ``publish`` (one script:
  history + live), ``history``, ``subscribe`` (an async context manager yielding
  :class:`Event`).
- :class:`Subscription`: bounded queue, slow-consumer policy, ``last_event_id`` to resume.
- :mod:`redkit.notify.web`: Server-Sent Events and WebSocket routes for Starlette/FastAPI
  (imported separately: the core never imports Starlette).
"""

from redkit.notify.bus import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CHANNELS,
    NotificationBus,
    SlowConsumerPolicy,
    Subscription,
)
from redkit.notify.events import (
    MAX_CHANNEL_LENGTH,
    MAX_CURSOR_CHANNELS,
    Event,
    EventType,
    SlowConsumer,
    encode_cursor,
    parse_cursor,
    pattern_prefix,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHANNELS",
    "MAX_CHANNEL_LENGTH",
    "MAX_CURSOR_CHANNELS",
    "Event",
    "EventType",
    "NotificationBus",
    "SlowConsumer",
    "SlowConsumerPolicy",
    "Subscription",
    "encode_cursor",
    "parse_cursor",
    "pattern_prefix",
]
