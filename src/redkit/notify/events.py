"""What a subscriber receives: :class:`Event`; event ids, resume cursors and channel names.

**Event ids** are the entry ids of the channel's history stream (``<ms>-<seq>``, e.g.
``1718000000000-0``): assigned by the server, strictly increasing per channel, and the
millisecond part is the server's clock when the event was published (``Event.time``). Ids of
different channels are not comparable (each stream counts on its own, and on a Cluster each
stream lives on its own node with its own clock).

**Resume cursors.** A subscription to one channel resumes from a plain event id. A
subscription to several channels (or patterns) resumes from a *cursor* that names the last id
seen on each channel: ``deployment%3Ap1=1718000000000-0;system%3Aalert=1718000000042-3``
(channel names percent-encoded, pairs joined by ``;``). It is plain ASCII, so it fits the
``Last-Event-ID`` header of Server-Sent Events. ``subscription.last_event_id`` gives the
current one; ``last_event_id=`` accepts either form, or a ``{channel: id}`` mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote, unquote

from redkit.errors import InvalidInput, RedkitError

__all__ = [
    "MAX_CHANNEL_LENGTH",
    "Event",
    "EventType",
    "SlowConsumer",
    "check_channel",
    "check_event_id",
    "encode_cursor",
    "glob_matches",
    "id_key",
    "parse_cursor",
]

MAX_CHANNEL_LENGTH = 256

EventType = Literal["event", "gap"]

_ID = re.compile(r"\d{1,20}-\d{1,20}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SlowConsumer(RedkitError):
    """A subscriber with ``slow_consumer="disconnect"`` fell ``queue_size`` events behind.

    Its subscription ended. Resubscribe with ``last_event_id=sub.last_event_id`` to catch up
    from history, or consume faster (or raise ``queue_size``).
    """


@dataclass(frozen=True, slots=True)
class Event:
    """One notification, as delivered to a subscriber.

    ``type`` is ``"event"`` for a published event, or ``"gap"`` for a marker that says events
    of ``channel`` were missed and cannot be delivered (history no longer reaches back that
    far, or a slow subscriber's queue overflowed): reload the state the channel describes.
    A gap's ``id`` is the last id known before the gap and ``data`` says why
    (``{"reason": "history_trimmed" | "slow_consumer", ...}``).

    ``data`` is shared by every local subscriber of the event: treat it as read-only.
    """

    id: str
    channel: str
    data: Any
    time: float
    """Server time of the publish, in seconds since the epoch (the id's millisecond part)."""
    type: EventType = "event"
    json: bytes = field(default=b"", repr=False, compare=False)
    """``data`` as the JSON text it was published as (the web layer sends it untouched)."""

    @property
    def is_gap(self) -> bool:
        return self.type == "gap"


def id_key(event_id: str) -> tuple[int, int]:
    """An event id as a sortable pair: ``"12-3"`` -> ``(12, 3)``."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def id_time(event_id: str) -> float:
    return int(event_id.partition("-")[0]) / 1000


def check_event_id(value: object, what: str = "event id") -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInput(
            f"{what} {value!r} is not an event id: expected '<milliseconds>-<sequence>', "
            "e.g. '1718000000000-0', as given by Event.id"
        )
    return value


def check_channel(name: object, what: str = "channel") -> str:
    """A channel (or pattern) name: 1-256 characters, no control characters."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise InvalidInput(
            f"{what} name is {len(name)} characters; the limit is {MAX_CHANNEL_LENGTH}"
        )
    if _CONTROL.search(name):
        raise InvalidInput(f"{what} name {name!r} contains control characters")
    return name


def encode_cursor(positions: Mapping[str, str]) -> str:
    """``{channel: id}`` as one ASCII string (see the module docstring)."""
    return ";".join(
        f"{quote(channel, safe='')}={event_id}" for channel, event_id in positions.items()
    )


def parse_cursor(value: str | Mapping[str, str], channels: tuple[str, ...]) -> dict[str, str]:
    """A ``last_event_id`` (plain id, cursor string or mapping) as ``{channel: id}``.

    A plain id applies to each of ``channels`` (the exactly-named channels of the
    subscription).
    """
    if isinstance(value, Mapping):
        return {
            check_channel(channel): check_event_id(event_id, f"last_event_id of {channel!r}")
            for channel, event_id in value.items()
        }
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            f"last_event_id must be an event id, a cursor string or a dict, got {value!r}"
        )
    if _ID.fullmatch(value):
        return dict.fromkeys(channels, value)
    out: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, event_id = part.rpartition("=")
        if not sep or not name:
            raise InvalidInput(
                f"last_event_id {value[:80]!r} is neither an event id nor a cursor "
                "('channel=id;channel=id', as given by Subscription.last_event_id)"
            )
        channel = check_channel(unquote(name))
        out[channel] = check_event_id(event_id, f"last_event_id of {channel!r}")
    return out


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    # Redis' glob (stringmatchlen): * ? [abc] [^a] [a-z] and backslash escapes.
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            j = i + 1
            negate = j < n and pattern[j] == "^"
            if negate:
                j += 1
            items: list[str] = []
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\" and j + 1 < n:
                    items.append(re.escape(pattern[j + 1]))
                    j += 2
                    continue
                if j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
                    low, high = sorted((pattern[j], pattern[j + 2]))
                    items.append(f"{re.escape(low)}-{re.escape(high)}")
                    j += 3
                    continue
                items.append(re.escape(pattern[j]))
                j += 1
            body = "".join(items)
            out.append(f"[^{body}]" if negate else (f"[{body}]" if body else "(?!)"))
            i = j + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches the Redis glob ``pattern`` (as ``PSUBSCRIBE`` would)."""
    return _glob_regex(pattern).fullmatch(channel) is not None


def has_glob(name: str) -> bool:
    """Whether ``name`` contains glob characters (so it is a pattern, not a channel)."""
    return any(ch in name for ch in "*?[")
