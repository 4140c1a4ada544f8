"""``SESSION_ENGINE = "redkit.django.sessions"``: Django's sessions on redkit's session store.

::

    SESSION_ENGINE = "redkit.django.sessions"
    REDKIT_SESSIONS = {"LOCATION": "redis://127.0.0.1:6379/0"}   # all keys optional

What it keeps from :class:`redkit.sessions.SessionStore`: IDs of 256 random bits, stored only
as hashes; an idle timeout (``IDLE_TTL``, default ``SESSION_COOKIE_AGE``) and an absolute one
(``ABSOLUTE_TTL``, default 30 days); ``cycle_key()`` is one atomic rotation (the old ID stops
working in the same script that makes the new one); a save writes only the fields this request
changed or removed, so concurrent requests that change different fields both keep their changes.

What it adds to Django: every session belongs to its user (``_auth_user_id``), so
:func:`sessions_of` lists a user's sessions and :func:`revoke_all` logs a user out everywhere.
A session becomes its user's when it is first saved after login: it is then saved under a new
ID of that user's (the pre-login one ends), so even a login that skipped ``cycle_key`` leaves
no pre-login ID that works. A session ID the server did not make is never adopted: a client
that sends one gets a new session (no session fixation). Anonymous sessions each belong to a
pseudo-user of their own.

``REDKIT_SESSIONS`` keys: ``LOCATION`` (server URL; default ``REDIS_URL``, else the embedded
server), ``NAMESPACE``, ``NAME`` (the store's name, default ``"django"``), ``IDLE_TTL``,
``ABSOLUTE_TTL``, ``MAX_PER_USER`` (the oldest sessions of a user end to make room). Django's
``set_expiry`` still sets the cookie's age; the server-side lifetime is the store's.
"""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta
from typing import Any, Final

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.signals import setting_changed

import redkit.sync
from redkit.codec import dumps
from redkit.errors import ConfigurationError, SessionNotFound
from redkit.sessions.store import Session, SessionInfo

__all__ = ["SessionStore", "revoke_all", "sessions_of"]

_KEYS: Final = frozenset(
    {"LOCATION", "NAMESPACE", "NAME", "IDLE_TTL", "ABSOLUTE_TTL", "MAX_PER_USER"}
)
_ANONYMOUS: Final = "anon:"
_USER: Final = "user:"

_lock = threading.Lock()
_store: redkit.sync.SessionStore | None = None


def _config() -> dict[str, Any]:
    config = dict(getattr(settings, "REDKIT_SESSIONS", None) or {})
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise ConfigurationError(
            f"REDKIT_SESSIONS does not know {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(_KEYS))}"
        )
    return config


def store() -> redkit.sync.SessionStore:
    """The process's session store (connected on first use, shared by every thread)."""
    global _store
    current = _store
    if current is not None:
        return current
    with _lock:
        if _store is None:
            config = _config()
            idle = config.get("IDLE_TTL", settings.SESSION_COOKIE_AGE)
            idle_s = idle.total_seconds() if isinstance(idle, timedelta) else idle
            absolute = config.get("ABSOLUTE_TTL", max(30 * 24 * 3600, idle_s))
            rk = redkit.sync.connect(config.get("LOCATION") or None, config.get("NAMESPACE"))
            _store = rk.sessions(
                idle_ttl=idle,
                absolute_ttl=absolute,
                max_per_user=config.get("MAX_PER_USER"),
                name=config.get("NAME", "django"),
            )
        return _store


def _reset(*, setting: str, **kwargs: Any) -> None:
    """Tests that override REDKIT_SESSIONS get a store for the new settings."""
    global _store
    if setting == "REDKIT_SESSIONS":
        with _lock:
            old, _store = _store, None
        if old is not None:
            old.rk.close()


setting_changed.connect(_reset)


def _owner(user: Any) -> str:
    """The store's user ID of a Django user (a model instance, or its primary key)."""
    pk = getattr(user, "pk", user)
    if pk is None or isinstance(pk, bool):
        raise ConfigurationError(f"{user!r} has no primary key")
    return _USER + str(pk)


def revoke_all(user: Any) -> int:
    """Log ``user`` (a user, or its primary key) out everywhere: end all of their sessions,
    atomically. Returns how many were ended."""
    return store().revoke_all(_owner(user))


def sessions_of(user: Any) -> list[SessionInfo]:
    """``user``'s live sessions (no IDs, no data: ``id_prefix`` is safe to show)."""
    return store().list(_owner(user))


class SessionStore(SessionBase):  # type: ignore[misc]  # Django ships no type hints
    """Django's ``SessionBase`` on redkit's session store (see the module docs)."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._owner: str | None = None
        # The fields as the server last had them (JSON text), to save only what changed.
        self._saved: dict[str, bytes] = {}

    def _use_key(self, key: str | None) -> None:
        # Django's property: an invalid key (None, too short) is stored as None.
        self._session_key = key

    def _remember(self, session: Session) -> dict[str, Any]:
        self._owner = session.user_id
        self._saved = {name: dumps(value) for name, value in session.data.items()}
        return dict(session.data)

    def _wanted_owner(self, data: dict[str, Any]) -> str:
        user = data.get(SESSION_KEY)
        if user is not None:
            return _USER + str(user)
        if self._owner is not None and self._owner.startswith(_ANONYMOUS):
            return self._owner
        return _ANONYMOUS + secrets.token_hex(16)

    # -- SessionBase's contract -----------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        """The session's data; an unknown, expired or revoked ID gives a new empty session."""
        session = store().get(self.session_key) if self.session_key else None
        if session is None:
            self._use_key(None)
            self._owner = None
            self._saved = {}
            return {}
        return self._remember(session)

    def exists(self, session_key: str) -> bool:
        """Whether a live session has this ID."""
        return store().get(session_key) is not None

    def create(self) -> None:
        """Save the current data as a new session under a new ID."""
        self._create(self._get_session(no_load=True))
        self.modified = True

    def _create(self, data: dict[str, Any]) -> None:
        session = store().create(self._wanted_owner(data), data)
        self._use_key(session.id)
        self._remember(session)

    def save(self, must_create: bool = False) -> None:
        """Write the fields this request changed or removed (others' changes stay).

        A new session, or ``must_create``, makes a new ID (the server makes every ID: one a
        client chose is never adopted). A session that ended meanwhile raises Django's
        ``UpdateError`` (the middleware answers 400). A session whose user changed (login)
        moves to a new ID of that user's, and the old ID ends.
        """
        data = self._get_session(no_load=must_create)
        if self.session_key is None or must_create:
            if must_create and self.session_key is not None and self.exists(self.session_key):
                raise CreateError
            self._create(data)
            return
        if self._owner is None:
            self.load()  # the owner and the saved fields, to compare against
            if self.session_key is None:
                raise UpdateError
        if self._wanted_owner(data) != self._owner:
            old = self.session_key
            self._create(data)
            store().revoke(old)
            return
        changed = {k: v for k, v in data.items() if self._saved.get(k) != dumps(v)}
        removed = [k for k in self._saved if k not in data]
        try:
            session = store().update(self.session_key, changed, remove=removed)
        except SessionNotFound:
            raise UpdateError from None
        merged = self._remember(session)
        # Fields another request saved meanwhile are part of this session now.
        self._session_cache = {**merged, **data}

    def delete(self, session_key: str | None = None) -> None:
        """End the session with this ID (default: this one)."""
        key = session_key if session_key is not None else self.session_key
        if key is None:
            return
        store().revoke(key)
        if key == self.session_key:
            self._owner = None
            self._saved = {}

    def cycle_key(self) -> None:
        """A new ID for the same session, atomically: the old ID stops working at once."""
        data = self._session
        key = self.session_key
        if key is None:
            self.create()
            return
        if self._owner is None:
            self.load()
        try:
            session = store().rotate(key)
        except SessionNotFound:
            self._use_key(None)
            self.create()
        else:
            self._use_key(session.id)
            self._remember(session)
        self._session_cache = data
        self.modified = True

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: the server expires sessions by itself."""
