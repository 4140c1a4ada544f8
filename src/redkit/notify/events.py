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
    "MAX_CURSOR_CHANNELS",
    "Event",
    "EventType",
    "SlowConsumer",
    "check_channel",
    "check_event_id",
    "check_pattern",
    "encode_cursor",
    "glob_matches",
    "id_key",
    "parse_cursor",
    "pattern_prefix",
]

MAX_CHANNEL_LENGTH = 256
"""Longest channel (or pattern) name, in characters."""

MAX_CURSOR_CHANNELS = 256
"""Most channels one resume cursor names. A subscription keeps the positions of at most this
many channels (its patterns may match more: the positions of the longest idle ones are
forgotten, and those channels resume from their next event), and a ``last_event_id`` naming
more is refused: every entry costs a history read when a subscription starts."""

_MAX_CURSOR_LENGTH = MAX_CURSOR_CHANNELS * (3 * MAX_CHANNEL_LENGTH + 43)
"""The longest cursor text: that many entries of the longest (percent-encoded) name."""

_MAX_ID_PART = 2**64 - 1

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
    traceparent: bytes | None = field(default=None, repr=False, compare=False)
    """The publisher's W3C trace context as the message carried it, unchecked: read it
    with :func:`redkit.otel.event_context`, which validates it."""

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
    """An event id as the server writes them: two whole numbers below 2**64."""
    if isinstance(value, str) and _ID.fullmatch(value):
        ms, _, seq = value.partition("-")
        if int(ms) <= _MAX_ID_PART and int(seq) <= _MAX_ID_PART:
            return value
    shown = value[:80] if isinstance(value, str) else value
    raise InvalidInput(
        f"{what} {shown!r} is not an event id: expected '<milliseconds>-<sequence>', "
        "e.g. '1718000000000-0', as given by Event.id"
    )


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
    if not name.isascii():
        try:
            name.encode()
        except UnicodeEncodeError:
            raise InvalidInput(f"{what} name {name!r} is not valid Unicode text") from None
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
        if len(value) > MAX_CURSOR_CHANNELS:
            raise InvalidInput(
                f"last_event_id names {len(value)} channels; a cursor names at most "
                f"{MAX_CURSOR_CHANNELS}"
            )
        return {
            check_channel(channel): check_event_id(event_id, f"last_event_id of {channel!r}")
            for channel, event_id in value.items()
        }
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            f"last_event_id must be an event id, a cursor string or a dict, got {value!r}"
        )
    if _ID.fullmatch(value):
        return dict.fromkeys(channels, check_event_id(value, "last_event_id"))
    if len(value) > _MAX_CURSOR_LENGTH or value.count(";") >= MAX_CURSOR_CHANNELS:
        raise InvalidInput(
            f"last_event_id is a cursor of {value.count(';') + 1} channels and "
            f"{len(value)} characters; a cursor names at most {MAX_CURSOR_CHANNELS} channels"
        )
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


# -- Redis glob patterns -------------------------------------------------------------------
#
# PSUBSCRIBE matches a pattern against channel names byte by byte (Redis' stringmatchlen):
# ``*`` any run of bytes, ``?`` one byte, ``[abc]`` ``[^abc]`` ``[a-z]`` one byte of a set,
# ``\x`` the byte ``x`` itself. Matching here must agree with the server, and must stay cheap
# whatever the pattern: a translation to one ``re`` regex (``.*a.*a.*a...b``) backtracks
# exponentially in the number of stars, and both the pattern and the channel names it is
# matched against can come from a client. So a pattern is cut at its stars into segments of
# one-byte tokens; a segment has no quantifier, so finding it costs at most its length per
# position, and the segments are placed greedily, each at its leftmost place after the
# previous one (which leaves the most room for the rest, so it finds a match whenever there
# is one): O(len(pattern) * len(channel)) in all, in C.

_ANY = rb"[\x00-\xff]"
_NEVER = rb"(?!)"


def _byte(b: int) -> bytes:
    return b"\\x%02x" % b


def _glob_tokens(pattern: str) -> list[bytes | None]:
    """``pattern`` as one-byte regex fragments, ``None`` for a star (runs of stars as one)."""
    raw = pattern.encode("utf-8", "surrogatepass")
    out: list[bytes | None] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == 0x2A:  # *
            if not out or out[-1] is not None:
                out.append(None)
            i += 1
        elif ch == 0x3F:  # ?
            out.append(_ANY)
            i += 1
        elif ch == 0x5C:  # backslash: the next byte as itself
            if i + 1 >= n:
                raise InvalidInput(
                    f"pattern {pattern!r} ends with a lone backslash; write '\\\\' for a "
                    "backslash itself"
                )
            out.append(_byte(raw[i + 1]))
            i += 2
        elif ch == 0x5B:  # [
            j = i + 1
            negate = j < n and raw[j] == 0x5E  # ^
            if negate:
                j += 1
            members: list[bytes] = []
            while True:
                if j >= n:
                    # Redis would let the set run to the end of the name it matches, which
                    # here has redkit's closing '}' after the pattern: refuse rather than
                    # match other channels than the pattern says.
                    raise InvalidInput(
                        f"pattern {pattern!r} has a '[' without its ']'; write '\\[' for a "
                        "bracket itself"
                    )
                b = raw[j]
                if b == 0x5C and j + 1 < n:
                    members.append(_byte(raw[j + 1]))
                    j += 2
                elif b == 0x5D:  # ]
                    break
                elif j + 2 < n and raw[j + 1] == 0x2D:  # a-z (either way round, as Redis)
                    low, high = sorted((b, raw[j + 2]))
                    members.append(_byte(low) + b"-" + _byte(high))
                    j += 3
                else:
                    members.append(_byte(b))
                    j += 1
            body = b"".join(members)
            if body:
                out.append(b"[" + (b"^" if negate else b"") + body + b"]")
            else:
                out.append(_ANY if negate else _NEVER)
            i = j + 1
        else:
            out.append(_byte(ch))
            i += 1
    return out


@dataclass(frozen=True, slots=True)
class _Glob:
    """A pattern cut at its stars: ``head * middle[0] * ... * tail`` (see above)."""

    head: re.Pattern[bytes]
    head_len: int
    middle: tuple[re.Pattern[bytes], ...]
    tail: re.Pattern[bytes] | None
    """``None`` when the pattern has no star (then ``head`` is all of it)."""
    tail_len: int

    def matches(self, name: bytes) -> bool:
        if self.tail is None:
            return self.head.fullmatch(name) is not None
        end = len(name) - self.tail_len
        if end < self.head_len or not self.head.match(name):
            return False
        if not self.tail.fullmatch(name, end):
            return False
        pos = self.head_len
        for segment in self.middle:
            found = segment.search(name, pos, end)
            if found is None:
                return False
            pos = found.end()
        return True


@lru_cache(maxsize=1024)
def _compile_glob(pattern: str) -> _Glob:
    segments: list[list[bytes]] = [[]]
    for token in _glob_tokens(pattern):
        if token is None:
            segments.append([])
        else:
            segments[-1].append(token)
    compiled = [re.compile(b"".join(seg)) for seg in segments]
    if len(segments) == 1:
        return _Glob(compiled[0], len(segments[0]), (), None, 0)
    return _Glob(
        compiled[0],
        len(segments[0]),
        tuple(compiled[1:-1]),
        compiled[-1],
        len(segments[-1]),
    )


def check_pattern(pattern: object) -> str:
    """A glob pattern as ``PSUBSCRIBE`` takes it: a valid name (see :func:`check_channel`)
    whose every ``[`` has its ``]`` and that does not end in a lone backslash."""
    name = check_channel(pattern, "pattern")
    _compile_glob(name)
    return name


def glob_matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches the Redis glob ``pattern`` (as ``PSUBSCRIBE`` would).

    Time linear in the product of the two lengths, whatever the pattern. Raises
    :class:`~redkit.errors.InvalidInput` for a malformed pattern (see :func:`check_pattern`).
    """
    return _compile_glob(pattern).matches(channel.encode("utf-8", "surrogatepass"))


def pattern_prefix(pattern: str) -> str:
    """The literal start of ``pattern``: every channel it matches begins with this text.

    What an ``authorize`` hook checks before granting a pattern: ``pattern_prefix(p)
    .startswith(f"project:{project_id}:")`` grants ``project:p1:*`` and
    ``project:p1:deploy-?`` to a member of p1, and never ``project:p1*`` (which also matches
    ``project:p10:...``) nor ``*``. Escapes are resolved (``a\\*b*`` -> ``a*b``).
    """
    check_pattern(pattern)
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch in "*?[":
            break
        if ch == "\\":
            i += 1
            ch = pattern[i]
        out.append(ch)
        i += 1
    return "".join(out)


def has_glob(name: str) -> bool:
    """Whether ``name`` contains glob characters (so it is a pattern, not a channel)."""
    return any(ch in name for ch in "*?[")
