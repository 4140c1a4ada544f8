"""The session store: create, get (one round trip), update, rotate, revoke, revoke_prefix,
revoke_all, list.

Keys (all of one user under one hash tag, ``{sess:<bucket>}``, see :mod:`.tokens`), below the
store's *base*: ``<ns>:{sess:<b>}`` for the store named ``default``, and
``<ns>:{sess:<b>}:n:<name>`` for a store with another ``name``::

    <base>:s:<sha256(token)>   hash: l last seen, a absolute deadline, c created (ms),
                               p id prefix, m JSON [user, ip, user agent],
                               d JSON {field: JSON text of its value}
                               TTL: the earlier of its idle and absolute deadlines
    <base>:u:<user id>         sorted set: token hash -> absolute deadline (ms)
                               pruned on every create/list; TTL: its last deadline
    <base>:p:<user id>         hash: project -> '<expiry ms>:<JSON>' (permissions)
                               pruned on every set; TTL: its last expiry

So a token is valid in the store that made it and nowhere else: two stores of one namespace
(``rk.sessions(name="admin")`` beside the default one) look a token up under different keys,
and a token of the other store is simply unknown, in the same one round trip. Each store has
its own user index, ``max_per_user``, ``list``, ``revoke_all`` and permission cache. The
default store keeps the layout it always had (its live sessions survive an upgrade); a store
name holds no ``:``, so no named store's keys can be another's, nor the default store's (whose
keys continue with ``:s:``, ``:u:`` or ``:p:``, never ``:n:``).

User and project IDs are strings or ints; an int is stored as its decimal text (``42`` and
``"42"`` are one user), and a reader gets a ``str`` back (``Session.user_id == "42"``).

Each operation is one Lua script on that slot. ``revoke_all`` and ``list`` read the user's
index and reach the session hashes it names inside the script (their names are the bucket's
base key plus the member), which is safe on a Cluster because every one of them carries the
same hash tag: the base key is passed as ``KEYS[1]`` so the script is routed to that slot.

A read fetches five fields (``HMGET``), not the whole hash field by field: the reply stays
small whatever the data holds. The data is one JSON object whose values are JSON texts, so
``update`` merges fields inside the script (concurrent updates of different fields all
survive) without decoding a value in Lua, where numbers would lose precision.

Expiry is the server's: a session hash carries a ``PEXPIREAT`` at the earlier of
``last seen + idle_ttl`` and ``created + absolute_ttl``, so Redis drops it by itself; touching
(moving ``last seen``) writes only when the last touch is ``touch_every`` old, so a read is
one ``EVALSHA`` that usually writes nothing. The cost: a session may end as early as
``idle_ttl - touch_every`` after its last request (never later than ``idle_ttl``).

**Activity** (:meth:`SessionStore.activity`: sessions used, created and revoked in the last
minutes) is counted where it cannot cost a read anything: each store notes the sessions it
sees used in a set in memory (the first 64 bits of the token's SHA-256, which the store keeps
in Redis anyway as the session's key; never the token), and a timer adds them, with the
created/revoked counts, once per :data:`ACTIVITY_FLUSH_INTERVAL` to per-minute buckets in one
script. A session read stays one round trip that writes nothing extra; several processes' notes
of one session count once. The buckets (one hash tag per store, so one slot on a Cluster)::

    <ns>:{sessact:<store name>}:h:<minute>   HyperLogLog of the sessions used in that minute
    <ns>:{sessact:<store name>}:c:<minute>   hash: created, revoked
                                             both expire ACTIVITY_MINUTES after their minute

A HyperLogLog is at most 12 KB whatever it counts and "active in the last N minutes" is one
``PFCOUNT`` over N of them (their union: a session used in several minutes counts once), with
the HyperLogLog's standard error of 0.81%. A set of ids per minute would be exact but grow with
the sessions; a sorted set of last-use times would need a write per read, or a ZADD per
session per flush on a key that grows with the sessions.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import orjson

from redkit._codegen import IS_ASYNC, async_only
from redkit._trace import traced
from redkit.codec import dumps, loads, milliseconds, seconds
from redkit.errors import (
    AmbiguousSessionPrefix,
    InvalidInput,
    RedkitError,
    SessionNotFound,
    translate_redis_errors,
)
from redkit.keys import SESSION_STORE_NAME, KeyGroup
from redkit.scripts import ScriptSet
from redkit.sessions import metrics
from redkit.sessions.tokens import PREFIX_LENGTH, bucket_of, hash_token, new_token, parse_bucket

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = [
    "ACTIVITY_FLUSH_INTERVAL",
    "ACTIVITY_MINUTES",
    "ACTIVITY_PENDING_MAX",
    "DEFAULT_MAX_BYTES",
    "MIN_PREFIX_LENGTH",
    "Permissions",
    "Session",
    "SessionActivity",
    "SessionInfo",
    "SessionStore",
]

SCRIPTS = ScriptSet(__package__)
log = logging.getLogger(__name__)

ACTIVITY_FLUSH_INTERVAL = 1.0
"""Seconds between a process's first unflushed session use and the flush that adds it to the
store's activity buckets: how late :meth:`SessionStore.activity` sees other processes' use."""
ACTIVITY_PENDING_MAX = 10_000
"""The bound of a store's in-memory notes: distinct sessions used between two flushes. One more
flushes at once (about 80 bytes each: the notes stay under a megabyte)."""
ACTIVITY_MINUTES = 60
"""Minutes of activity kept (each bucket expires then): the widest window
:meth:`SessionStore.activity` reads."""
_ACTIVITY_ID_CHARS = 16
"""Hex characters of the token's SHA-256 noted per session: 64 bits, so two sessions share a
note with a chance far below the HyperLogLog's own error."""

DEFAULT_MAX_BYTES = 64 * 1024
"""Default cap on one session's data as stored (one JSON object of JSON texts), bytes."""

MAX_USER_ID = 512
"""Longest user ID, characters (an int ID: its decimal digits)."""
MAX_PROJECT_ID = 512
MAX_IP = 64
MAX_USER_AGENT = 512
"""Longer user agents are cut to this length (clients choose them; refusing a login for one
would be worse)."""

MIN_PREFIX_LENGTH = 4
"""Shortest prefix :meth:`SessionStore.revoke_prefix` takes (24 random bits): shorter ones
would too easily name a session the user did not mean; ``list()`` shows ``PREFIX_LENGTH``."""
_PREFIX = re.compile(r"[A-Za-z0-9_-]+")

_NOT_FOUND = (
    "no live session has this ID: it never existed, expired or was revoked; "
    "ask the user to sign in again"
)


@dataclass(frozen=True, slots=True)
class Session:
    """A live session. ``id`` is the bearer secret: it is kept out of ``repr``; log
    ``id_prefix`` instead. Times are seconds since the epoch (server clock)."""

    id: str = field(repr=False)
    user_id: str
    """Always a ``str``: an int user ID given to ``create`` reads back as its decimal text."""
    data: dict[str, Any]
    created_at: float
    last_seen_at: float
    """The last *recorded* touch: reads record one at most every ``touch_every``."""
    expires_at: float
    """When the session ends unless used again: ``min(last seen + idle, absolute)``."""
    absolute_expires_at: float
    """When the session ends whatever happens."""
    ip: str | None = None
    user_agent: str | None = None

    @property
    def id_prefix(self) -> str:
        """The first characters of the ID: safe to log and show (see ``list()``)."""
        return self.id[:PREFIX_LENGTH]

    def __repr__(self) -> str:
        return (
            f"<Session user={self.user_id!r} id={self.id_prefix}… fields={len(self.data)} "
            f"expires_at={self.expires_at:.3f}>"
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as ``list()`` shows it: no ID, no data; ``id_prefix`` is safe to display."""

    id_prefix: str
    user_id: str
    ip: str | None
    user_agent: str | None
    created_at: float
    last_seen_at: float
    expires_at: float
    absolute_expires_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SessionActivity:
    """What a store's sessions did in the last ``minutes`` minutes, every process's (see
    :meth:`SessionStore.activity`)."""

    minutes: int
    """The window: the server's current minute and the ``minutes - 1`` before it."""
    active: int
    """Distinct sessions used (created, read, updated or rotated) in the window, by a
    HyperLogLog: standard error 0.81% (exact in practice for a few hundred). A session used
    and then revoked or expired within the window still counts: it was active."""
    created: int
    """Sessions created in the window."""
    revoked: int
    """Sessions ended early (``revoke``, ``revoke_prefix``, ``revoke_all``) in the window; not
    those that expired."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_id(value: object, what: str, limit: int) -> str:
    """A user or project ID as the keys hold it: a non-empty str, or an int as its digits."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(
            f"{what} must be a string or an int, got {type(value).__name__} {value!r:.80}"
        )
    if isinstance(value, int):
        # An int subclass (an IntEnum member) counts as its number. Checked before str():
        # the digits of a huge int are costly to produce (and Python refuses > 4300).
        if value.bit_length() > limit * 4:
            raise InvalidInput(f"{what} is an int of more than {limit} digits")
        text = str(int(value))
    else:
        text = str.__str__(value)  # a str subclass counts as its text
        if not text:
            raise InvalidInput(f"{what} must be a non-empty string or an int, got ''")
    if len(text) > limit:
        raise InvalidInput(f"{what} is {len(text):,} characters; the limit is {limit}")
    return text


def _check_user_id(user_id: object) -> str:
    return _check_id(user_id, "user_id", MAX_USER_ID)


def _check_optional(value: object, what: str, limit: int, *, cut: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string or None, got {value!r}")
    if len(value) > limit:
        if cut:
            return value[:limit]
        raise InvalidInput(f"{what} is {len(value)} characters; the limit is {limit}")
    return value


class SessionStore:
    """Sessions in Redis/Valkey: secure IDs, idle and absolute timeouts, log out everywhere.

    Make one with ``rk.sessions(idle_ttl=..., absolute_ttl=..., max_per_user=None)``.

    ``name`` (default ``"default"``; 1-64 ASCII letters, digits and ``_ . -``): stores with
    different names in one namespace are apart: a token is valid only in the store that
    made it, and each has its own user index, limits and permission cache.
    User IDs (and project IDs) are strings or ints; an int reads back as its decimal text.

    ``get(id)`` returns ``None`` for an unknown, expired or revoked ID (a malformed one is
    refused without a round trip); :meth:`require` raises :class:`SessionNotFound` instead.
    ``update`` and ``rotate`` raise :class:`SessionNotFound`; ``revoke`` returns a bool.
    Session data is a JSON object; ``update`` merges it field by field, so concurrent updates
    of different fields all survive.
    """

    def __init__(
        self,
        rk: Redkit,
        *,
        idle_ttl: float | timedelta = timedelta(days=7),
        absolute_ttl: float | timedelta = timedelta(days=30),
        max_per_user: int | None = None,
        touch_every: float | timedelta | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        permission_ttl: float | timedelta = timedelta(hours=1),
        name: str = "default",
    ) -> None:
        self.rk = rk
        self.name = SESSION_STORE_NAME.check(name, "session store name")
        self.idle_ttl = seconds(idle_ttl, "idle_ttl")
        self.absolute_ttl = seconds(absolute_ttl, "absolute_ttl")
        self.touch_every = (
            self.idle_ttl / 10
            if touch_every is None
            else seconds(touch_every, "touch_every", allow_zero=True)
        )
        if self.touch_every >= self.idle_ttl:
            raise InvalidInput(
                f"touch_every ({self.touch_every}s) must be shorter than idle_ttl "
                f"({self.idle_ttl}s), or active sessions would expire; the default is idle_ttl/10"
            )
        if max_per_user is not None and (
            isinstance(max_per_user, bool) or not isinstance(max_per_user, int) or max_per_user < 1
        ):
            raise InvalidInput(f"max_per_user must be an int >= 1 or None, got {max_per_user!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise InvalidInput(f"max_bytes must be an int >= 1, got {max_bytes!r}")
        self.max_per_user = max_per_user
        self.max_bytes = max_bytes
        self.permission_ttl = seconds(permission_ttl, "permission_ttl")
        self._idle_ms = milliseconds(self.idle_ttl)
        self._absolute_ms = milliseconds(self.absolute_ttl)
        self._touch_ms = milliseconds(self.touch_every, allow_zero=True)
        self._groups: dict[str, KeyGroup] = {}
        # Activity: noted here on the hot path (no round trip, no write), flushed by a timer.
        self._activity_base = rk.keys.group("sessact", self.name).key()
        self._used: set[str] = set()
        self._created = 0
        self._revoked = 0
        # The sync API's store is shared by threads: noting and the flush's swap are one
        # critical section. (Async: uncontended, nothing awaited inside.)
        self._activity_lock = threading.Lock()
        self.activity_flush_interval = ACTIVITY_FLUSH_INTERVAL
        """Seconds this store keeps its notes of session use before flushing them."""
        self.activity_pending_max = ACTIVITY_PENDING_MAX
        """Distinct sessions noted before a flush is sent at once, without waiting."""
        if IS_ASYNC:
            self._flush_handle: asyncio.TimerHandle | None = None
            self._tasks: set[asyncio.Task[None]] = set()
        else:
            # Sync: no loop to time a flush; the use that finds the interval passed sends the
            # notes itself (one round trip about once per interval, as the rate limiter's).
            self._flush_due = time.monotonic() + self.activity_flush_interval
            # flush_activity's take and send, one thread at a time (see there).
            self._send_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<SessionStore idle_ttl={self.idle_ttl:g}s absolute_ttl={self.absolute_ttl:g}s "
            f"touch_every={self.touch_every:g}s max_per_user={self.max_per_user} "
            f"name={self.name!r} namespace={self.rk.namespace!r}>"
        )

    # -- keys ------------------------------------------------------------------------------

    def _group(self, bucket: str) -> KeyGroup:
        """The store's base in ``bucket``: its keys are ``<base>:s:...``, ``:u:``, ``:p:``."""
        # At most 16,384 buckets: cache their groups (building one costs more than a hash).
        group = self._groups.get(bucket)
        if group is None:
            group = self.rk.keys.group("sess", bucket)
            if self.name != "default":
                # The store's name is part of every key, so its tokens are unknown elsewhere.
                group = KeyGroup(group.key("n", self.name))
            self._groups[bucket] = group
        return group

    def _session_key(self, token: str) -> tuple[KeyGroup, str, str] | None:
        """(group, session key, token hash) of a well-formed token; None otherwise."""
        bucket = parse_bucket(token)
        if bucket is None:
            return None
        digest = hash_token(token)
        group = self._group(bucket)
        return group, group.key("s", digest), digest

    # -- encoding --------------------------------------------------------------------------

    def _encode(self, data: Mapping[str, Any] | None, what: str) -> dict[str, str]:
        """``{field: JSON text}``; InvalidInput if not a JSON object or over the cap.

        Each value is JSON on its own, so the update script can merge fields without ever
        decoding a value (Lua's cjson would round numbers).
        """
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{what} must be a mapping of field names to JSON values")
        out: dict[str, str] = {}
        for name, value in data.items():
            if not isinstance(name, str) or not name:
                raise InvalidInput(f"{what}: field names must be non-empty strings, got {name!r}")
            out[name] = dumps(value, max_bytes=self.max_bytes, what=f"{what}[{name!r}]").decode()
        return out

    def _blob(self, fields: dict[str, str], what: str) -> bytes:
        """The stored form of the data: one JSON object of JSON texts, size-capped."""
        blob = orjson.dumps(fields)
        if len(blob) > self.max_bytes:
            raise InvalidInput(
                f"{what} is {len(blob):,} bytes as stored, over the {self.max_bytes:,}-byte "
                "cap; store less, or raise the cap (rk.sessions(max_bytes=...))"
            )
        return blob

    def _session(self, token: str, reply: Sequence[Any]) -> Session:
        """A Session from ``{last seen, absolute deadline, created, meta, data}``."""
        seen, deadline, created, meta, blob = reply
        last_seen = int(seen)
        absolute = int(deadline)
        user_id, ip, agent = loads(meta)
        return Session(
            id=token,
            user_id=user_id,
            data={name: loads(text) for name, text in (loads(blob) or {}).items()},
            created_at=int(created) / 1000,
            last_seen_at=last_seen / 1000,
            expires_at=min(last_seen + self._idle_ms, absolute) / 1000,
            absolute_expires_at=absolute / 1000,
            ip=ip,
            user_agent=agent,
        )

    # -- operations ------------------------------------------------------------------------

    @traced("session.create")
    async def create(
        self,
        user_id: str | int,
        data: Mapping[str, Any] | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> Session:
        """Start a session for ``user_id`` with ``data`` (a JSON object); one round trip.

        ``user_id``: a string, or an int, stored as its decimal text (``Session.user_id`` is
        then ``"42"``: ``42`` and ``"42"`` are one user). With ``max_per_user``, the user's
        oldest sessions end to make room.
        """
        user_id = _check_user_id(user_id)
        fields = self._encode(data, "session data")
        blob = self._blob(fields, "session data")
        ip = _check_optional(ip, "ip", MAX_IP)
        user_agent = _check_optional(user_agent, "user_agent", MAX_USER_AGENT, cut=True)
        meta = orjson.dumps([user_id, ip, user_agent])
        bucket = bucket_of(user_id)
        group = self._group(bucket)
        token = new_token(bucket)
        digest = hash_token(token)
        now, _evicted = await self.rk.run(
            SCRIPTS["create"],
            keys=[group.key(), group.key("s", digest), group.key("u", user_id)],
            args=[
                digest,
                self._idle_ms,
                self._absolute_ms,
                self.max_per_user or 0,
                token[:PREFIX_LENGTH],
                meta,
                blob,
            ],
        )
        metrics.CREATED.inc()
        self._note(digest, created=1)
        return self._session(token, [now, now + self._absolute_ms, now, meta, blob])

    @traced("session.get")
    async def get(self, session_id: str) -> Session | None:
        """The live session with this ID, or ``None``. One round trip; it writes (touches)
        only when the last recorded touch is ``touch_every`` old (that read takes a second
        round trip on a standalone server: the touch script)."""
        where = self._session_key(session_id)
        if where is None:
            return None
        _group, key, digest = where
        if IS_ASYNC:
            # Sync: always the script (one round trip too; the HMGET + TIME read below rides
            # on the automatic pipeline, which the sync API does not have).
            pipeline = self.rk.pipeline
            if pipeline is not None and self._touch_ms > 0:
                # The usual read writes nothing, so it needs no script: HMGET and the server's
                # TIME in one round trip cost the server a fraction of a Lua call. Only a read
                # that must touch runs the script, which decides again, atomically.
                fields, now_us = await pipeline.read_at_server_time(
                    ("HMGET", key, "l", "a", "c", "m", "d")
                )
                if fields[0] is None or fields[1] is None:
                    return None
                now = now_us // 1000
                if now >= int(fields[1]):
                    return None  # at its absolute deadline: the key expires this instant
                if now - int(fields[0]) < self._touch_ms:
                    self._note(digest)
                    return self._session(session_id, fields)
        reply = await self.rk.run(SCRIPTS["get"], keys=[key], args=[self._touch_ms, self._idle_ms])
        if reply is None:
            return None
        self._note(digest)
        return self._session(session_id, reply)

    async def require(self, session_id: str) -> Session:
        """Like :meth:`get`, but raise :class:`SessionNotFound` instead of returning None."""
        session = await self.get(session_id)
        if session is None:
            raise SessionNotFound(_NOT_FOUND)
        return session

    @traced("session.update")
    async def update(
        self,
        session_id: str,
        data: Mapping[str, Any] | None = None,
        *,
        remove: Sequence[str] = (),
    ) -> Session:
        """Set the fields of ``data`` and delete the fields named in ``remove``; other fields
        stay as they are. Counts as activity (slides the idle deadline). One round trip.

        Raises SessionNotFound if the session is gone, InvalidInput if the merged data would be
        over the cap (then nothing is written).
        """
        fields = self._encode(data, "session data")
        self._blob(fields, "the update")  # refuse what could never fit, before a round trip
        if isinstance(remove, str) or not all(isinstance(n, str) and n for n in remove):
            raise InvalidInput("remove must be a sequence of field names (non-empty strings)")
        where = self._session_key(session_id)
        if where is None:
            raise SessionNotFound(_NOT_FOUND)
        _group, key, digest = where
        reply = await self.rk.run(
            SCRIPTS["update"],
            keys=[key],
            args=[
                self._idle_ms,
                self.max_bytes,
                len(fields),
                *(part for pair in fields.items() for part in pair),
                *remove,
            ],
        )
        if reply is None:
            raise SessionNotFound(_NOT_FOUND)
        if reply[0] == -1:
            raise InvalidInput(
                f"session data would be {reply[1]:,} bytes after this update, over the "
                f"{self.max_bytes:,}-byte cap; nothing was written"
            )
        self._note(digest)
        return self._session(session_id, reply)

    @traced("session.rotate")
    async def rotate(self, session_id: str) -> Session:
        """The same session under a new ID; the old ID stops working at once.

        Call it when privileges change (sign-in, sudo mode) against session fixation. The
        absolute deadline stays; the idle one slides. Raises SessionNotFound.
        """
        where = self._session_key(session_id)
        if where is None:
            raise SessionNotFound(_NOT_FOUND)
        group, key, digest = where
        token = new_token(session_id[-4:])
        new_digest = hash_token(token)
        reply = await self.rk.run(
            SCRIPTS["rotate"],
            keys=[group.key(), key, group.key("s", new_digest)],
            args=[digest, new_digest, token[:PREFIX_LENGTH], self._idle_ms],
        )
        if reply is None:
            raise SessionNotFound(_NOT_FOUND)
        self._note(new_digest)
        return self._session(token, reply)

    @traced("session.revoke")
    async def revoke(self, session_id: str) -> bool:
        """End one session; False if there was no live session with this ID."""
        where = self._session_key(session_id)
        if where is None:
            return False
        group, key, digest = where
        ended = await self.rk.run(SCRIPTS["revoke"], keys=[group.key(), key], args=[digest])
        if ended:
            metrics.REVOKED.inc()
            self._note(None, revoked=1)
        return bool(ended)

    @traced("session.revoke_all")
    async def revoke_all(self, user_id: str | int) -> int:
        """End every session of ``user_id`` and drop their cached permissions, atomically:
        a session created concurrently is either ended here or listed afterwards.

        Returns the number of live sessions ended.
        """
        user_id = _check_user_id(user_id)
        group = self._group(bucket_of(user_id))
        ended = await self.rk.run(
            SCRIPTS["revoke_all"],
            keys=[group.key(), group.key("u", user_id), group.key("p", user_id)],
        )
        metrics.REVOKED.inc(int(ended))
        if ended:
            self._note(None, revoked=int(ended))
        return int(ended)

    async def list(self, user_id: str | int) -> builtins.list[SessionInfo]:
        """The live sessions of ``user_id``, oldest first (no IDs: ``id_prefix`` only)."""
        user_id = _check_user_id(user_id)
        group = self._group(bucket_of(user_id))
        reply = await self.rk.run(SCRIPTS["list"], keys=[group.key(), group.key("u", user_id)])
        out = [self._info(user_id, row) for row in reply[1:]]
        out.sort(key=lambda info: info.created_at)
        return out

    async def revoke_prefix(self, user_id: str | int, prefix: str) -> SessionInfo:
        """End the one live session of ``user_id`` whose ID starts with ``prefix`` (as
        ``list()`` shows it, or its first ``MIN_PREFIX_LENGTH`` characters or more), and
        return what it was. One round trip, atomic; only this user's sessions are searched,
        so a prefix of someone else's session is simply unknown.

        Raises :class:`InvalidInput` for a prefix that is not ID characters, shorter than
        ``MIN_PREFIX_LENGTH`` or longer than ``PREFIX_LENGTH``;
        :class:`AmbiguousSessionPrefix` (an ``InvalidInput``) when it names several sessions,
        and then none is ended; :class:`SessionNotFound` when it names none.
        """
        user_id = _check_user_id(user_id)
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise InvalidInput(
                f"a session ID prefix is letters, digits, '-' and '_', got {prefix!r:.80}"
            )
        if not MIN_PREFIX_LENGTH <= len(prefix) <= PREFIX_LENGTH:
            raise InvalidInput(
                f"a session ID prefix has {MIN_PREFIX_LENGTH} to {PREFIX_LENGTH} characters "
                f"(as list() shows it), got {len(prefix)}"
            )
        group = self._group(bucket_of(user_id))
        reply = await self.rk.run(
            SCRIPTS["revoke_prefix"], keys=[group.key(), group.key("u", user_id)], args=[prefix]
        )
        matches = int(reply[0])
        if matches == 0:
            raise SessionNotFound(f"no live session of this user has an ID starting {prefix!r}")
        if matches > 1:
            raise AmbiguousSessionPrefix(
                f"{matches} live sessions have an ID starting {prefix!r}; none was ended: "
                f"give more of it (list() shows {PREFIX_LENGTH} characters)",
                matches,
            )
        metrics.REVOKED.inc()
        self._note(None, revoked=1)
        return self._info(user_id, reply[1])

    # -- activity --------------------------------------------------------------------------

    def _note(self, digest: str | None, created: int = 0, revoked: int = 0) -> None:
        """Note a session used (``digest``: its token's hash) and sessions created or revoked,
        in memory; a timer flushes the notes (:meth:`flush_activity`)."""
        batch = None
        with self._activity_lock:
            used = self._used
            if digest is not None:
                used.add(digest[:_ACTIVITY_ID_CHARS])
            self._created += created
            self._revoked += revoked
            if len(used) >= self.activity_pending_max:
                # Full: these notes go now, so memory stays bounded whatever the traffic.
                batch = self._take_notes()
        if batch is not None:
            self._send_soon(batch)
        elif IS_ASYNC:
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_later(
                    self.activity_flush_interval, self._flush_later
                )
        elif time.monotonic() >= self._flush_due:
            self._flush_quietly()

    def _take_notes(self) -> tuple[set[str], int, int]:
        """The pending notes, replaced by empty ones (call it holding the lock)."""
        batch = (self._used, self._created, self._revoked)
        self._used, self._created, self._revoked = set(), 0, 0
        if IS_ASYNC:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        else:
            self._flush_due = time.monotonic() + self.activity_flush_interval
        return batch

    def _send_soon(self, batch: tuple[set[str], int, int]) -> None:
        if IS_ASYNC:
            task = asyncio.ensure_future(self._send_quietly(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._send_quietly(batch)

    @async_only
    def _flush_later(self) -> None:
        self._flush_handle = None
        task = asyncio.ensure_future(self._flush_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_quietly(self) -> None:
        with self._activity_lock:
            batch = self._take_notes()
        await self._send_quietly(batch)

    async def _send_quietly(self, batch: tuple[set[str], int, int]) -> None:
        # Nobody awaits the timer's flush: an error is logged here, not left in a task. The
        # notes are observability only: dropped, not retried (a retry queue would be one
        # more thing to bound).
        try:
            await self._send(batch)
        except (RedkitError, TimeoutError) as exc:
            log.warning("session store %r: activity not written (%s)", self.name, exc)

    async def _send(self, batch: tuple[set[str], int, int]) -> None:
        used, created, revoked = batch
        if not used and not created and not revoked:
            return
        with translate_redis_errors(f"session activity of {self.name!r}"):
            await self.rk.run(
                SCRIPTS["activity_flush"],
                keys=[self._activity_base],
                args=[created, revoked, ACTIVITY_MINUTES, *used],
            )

    async def flush_activity(self) -> None:
        """Add this store's pending notes of session use (and created/revoked counts) to the
        shared activity buckets now: one round trip, none with nothing pending. Runs by itself
        within :data:`ACTIVITY_FLUSH_INTERVAL` of a use; call it before a clean shutdown to
        lose none. Raises :class:`ConnectionLost` if the server is unreachable (the notes are
        then dropped)."""
        # A count read after this call must see every note taken before it, also those a
        # timer's flush, a full set's or another caller's took and is still sending: this
        # send goes after theirs have landed (else activity() could read too early).
        if IS_ASYNC:
            with self._activity_lock:
                batch = self._take_notes()
            earlier = list(self._tasks)
            send = asyncio.ensure_future(self._send(batch))
            self._tasks.add(send)
            send.add_done_callback(self._tasks.discard)
            if earlier:
                await asyncio.wait(earlier)
            await send
        else:
            with self._send_lock:
                with self._activity_lock:
                    batch = self._take_notes()
                await self._send(batch)

    async def activity(self, minutes: int = 5) -> SessionActivity:
        """Sessions used, created and revoked in the last ``minutes`` minutes (the server's
        current minute and the ``minutes - 1`` before it; 1 to :data:`ACTIVITY_MINUTES`), by
        every process of this store's name. One round trip, after flushing this process's
        notes (other processes' arrive within their flush interval).

        ``active`` counts distinct sessions by a HyperLogLog: its standard error is 0.81%
        (so ±1.6% for 95% of readings; small counts are near exact). Sessions are counted by
        the stores that saw them used, so a session's use shows only where the store is
        used: a read of a token this store does not know counts nothing.
        """
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise InvalidInput(f"minutes must be an int, got {minutes!r}")
        if not 1 <= minutes <= ACTIVITY_MINUTES:
            raise InvalidInput(
                f"minutes must be 1 to {ACTIVITY_MINUTES} (the activity kept), got {minutes}"
            )
        await self.flush_activity()
        with translate_redis_errors(f"session activity of {self.name!r}"):
            active, created, revoked = await self.rk.run(
                SCRIPTS["activity_count"], keys=[self._activity_base], args=[minutes]
            )
        return SessionActivity(minutes, int(active), int(created), int(revoked))

    async def active_count(self, minutes: int = 5) -> int:
        """Distinct sessions used in the last ``minutes`` minutes (HyperLogLog, 0.81% standard
        error): ``(await activity(minutes)).active``."""
        return (await self.activity(minutes)).active

    def _info(self, user_id: str, row: Sequence[Any]) -> SessionInfo:
        """A SessionInfo from ``{id prefix, meta, created, last seen, absolute deadline}``."""
        prefix, meta, created, seen, deadline = row
        _user, ip, agent = loads(meta)
        return SessionInfo(
            id_prefix=prefix.decode() if isinstance(prefix, bytes) else str(prefix),
            user_id=user_id,
            ip=ip,
            user_agent=agent,
            created_at=int(created) / 1000,
            last_seen_at=int(seen) / 1000,
            expires_at=min(int(seen) + self._idle_ms, int(deadline)) / 1000,
            absolute_expires_at=int(deadline) / 1000,
        )

    # -- the permission cache --------------------------------------------------------------

    def permissions(self, user_id: str | int, project_id: str | int) -> Permissions:
        """The cached permissions of ``user_id`` in ``project_id`` (a handle: get/set/invalidate).

        Entries live ``permission_ttl`` (default 1 h) and are dropped by ``revoke_all``. IDs
        are strings or ints (an int counts as its decimal text: ``42`` is ``"42"``).
        """
        user_id = _check_user_id(user_id)
        project_id = _check_id(project_id, "project_id", MAX_PROJECT_ID)
        return Permissions(self, user_id, project_id)

    async def invalidate_permissions(self, user_id: str | int) -> bool:
        """Drop every cached permission of ``user_id``; True if there was any."""
        user_id = _check_user_id(user_id)
        key = self._group(bucket_of(user_id)).key("p", user_id)
        with translate_redis_errors("invalidate permissions"):
            return bool(await self.rk.redis.delete(key))


class Permissions:
    """The cached permissions of one user in one project; from ``store.permissions(u, p)``."""

    __slots__ = ("_key", "project_id", "store", "user_id")

    def __init__(self, store: SessionStore, user_id: str, project_id: str) -> None:
        self.store = store
        self.user_id = user_id
        self.project_id = project_id
        self._key = store._group(bucket_of(user_id)).key("p", user_id)

    def __repr__(self) -> str:
        return f"<Permissions user={self.user_id!r} project={self.project_id!r}>"

    async def get(self) -> Any:
        """The cached value, or ``None`` when absent or expired. One round trip."""
        raw = await self.store.rk.run(
            SCRIPTS["permissions_get"], keys=[self._key], args=[self.project_id]
        )
        return loads(raw)

    async def set(self, value: Any, ttl: float | timedelta | None = None) -> None:
        """Cache ``value`` (JSON) for ``ttl`` (default: the store's ``permission_ttl``)."""
        if value is None:
            raise InvalidInput("None reads back as a miss; cache an empty list or dict instead")
        encoded = dumps(value, max_bytes=self.store.max_bytes, what="permissions")
        ttl_ms = milliseconds(self.store.permission_ttl if ttl is None else ttl, "ttl")
        await self.store.rk.run(
            SCRIPTS["permissions_set"], keys=[self._key], args=[self.project_id, ttl_ms, encoded]
        )

    async def invalidate(self) -> bool:
        """Drop this entry; True if there was one."""
        with translate_redis_errors("invalidate permissions"):
            return bool(await self.store.rk.redis.hdel(self._key, self.project_id))
