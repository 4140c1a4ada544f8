"""Server-side Flask sessions on redkit's :class:`~redkit.sync.SessionStore`.

``flask.session`` keeps working as it always does; what changes is where it lives:

* The cookie holds only the session ID (256 random bits), signed with the app's
  ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` still verify), so a forged or mangled cookie costs
  no round trip. The data stays in Redis, where the ID is stored hashed.
* The store is read on first use of ``session`` in a request, not before: a request that
  never touches it costs nothing. One read, one round trip.
* At the end of the request only the keys that changed are written (found by comparing each
  value's JSON with what was read, so ``session["cart"].append(x)`` counts too), merged into
  the stored session field by field: two concurrent requests that change different keys both
  keep their change. Nothing changed, nothing written.
* :func:`login` starts a new session under a new ID for the user (carrying the anonymous
  session's data along) and ends the old one, so a planted ID (session fixation) is worth
  nothing; :func:`rotate_session` changes the ID and keeps the user; :func:`logout` ends this
  session and :func:`logout_everywhere` every session of the user.
* Before :func:`login`, a session that holds data is *anonymous*: stored under a user ID of
  its own that starts with :data:`ANONYMOUS_PREFIX` (reserved: ``login`` refuses such IDs).
* The cookie is ``HttpOnly`` and ``SameSite=Lax`` (or Flask's ``SESSION_COOKIE_SAMESITE``),
  and ``Secure`` on HTTPS and on every host but a loopback one (``REDKIT_SESSION_COOKIE_SECURE``
  fixes it either way). Without ``session.permanent`` it is a browser-session cookie; with it,
  it lasts until the session's absolute deadline. The server's idle and absolute timeouts
  apply either way.

Values are JSON (orjson: ``datetime`` and ``UUID`` read back as strings, tuples as lists);
a value that is not JSON, or data over the store's size cap, raises
:class:`~redkit.errors.InvalidInput` and nothing is written. Redis unreachable: a view that
reads the session gets the extension's 503; a write at the end of the request that cannot be
made turns the response into that 503, so no client believes a change was kept.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from flask import Flask, Request, Response, json, request
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, Signer

from redkit.errors import ConfigurationError, ConnectionLost, InvalidInput, SessionNotFound
from redkit.flask.extension import _state
from redkit.hosts import is_loopback_host
from redkit.ratelimit.address import client_ip
from redkit.sessions.store import Session
from redkit.sync import SessionStore

__all__ = [
    "ANONYMOUS_PREFIX",
    "RedkitSession",
    "RedkitSessionInterface",
    "login",
    "logout",
    "logout_everywhere",
    "rotate_session",
]

log = logging.getLogger("redkit.flask")

ANONYMOUS_PREFIX = "~anon:"
"""The user ID of a session made before sign-in starts with this (then 128 random bits)."""

_SALT = "redkit.flask.session"
# A signed ID is ~90 characters; anything much longer is not ours (and is not worth hashing).
_MAX_COOKIE = 256


def _encoded(value: Any) -> bytes | None:
    """A value's JSON, to tell changed values apart; None when it is not JSON (the store
    then refuses it with a clear error)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return None


class RedkitSession(SessionMixin):
    """``flask.session`` under :class:`RedkitSessionInterface`: a mapping read from the store
    on first use. ``user_id`` is the signed-in user (``None`` before :func:`login`)."""

    def __init__(
        self, store: Callable[[], SessionStore], token: str | None, *, stale: bool
    ) -> None:
        # The store is reached on first use: a request that never touches its session
        # (or an app whose server is down) does not connect for it.
        self._get_store = store
        self._token = token
        self._loaded = False
        self._session: Session | None = None
        self._data: dict[str, Any] = {}
        self._snapshot: dict[str, bytes | None] = {}
        # What the cookie must do at the end of the request: a cookie that names no live
        # session (forged, expired, revoked) is cleared.
        self._cookie: Literal["set", "clear"] | None = "clear" if stale else None
        self.accessed = False
        self.modified = False  # kept for code that sets it; changes are found by comparison

    @property
    def _store(self) -> SessionStore:
        return self._get_store()

    def __repr__(self) -> str:
        if not self._loaded:
            return "<RedkitSession (not read yet)>"
        who = f"user={self.user_id!r}" if self.user_id else "anonymous"
        return f"<RedkitSession {who} keys={len(self._data)}>"

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self.accessed = True
        session = self._store.get(self._token) if self._token else None
        if self._token and session is None:
            self._cookie = "clear"
        self._adopt(session)
        self._loaded = True

    def _adopt(self, session: Session | None) -> None:
        """Take ``session`` (or none) as what the store holds now."""
        self._session = session
        self._data = dict(session.data) if session else {}
        self._snapshot = {name: _encoded(value) for name, value in self._data.items()}

    # -- the mapping -----------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._load()
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._load()
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._load()
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._data)

    def __len__(self) -> int:
        self._load()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._load()
        return key in self._data

    # -- who -------------------------------------------------------------------------------

    @property
    def user_id(self) -> str | None:
        """The signed-in user's ID (a ``str``), or ``None`` for an anonymous session."""
        self._load()
        if self._session is None or self._session.user_id.startswith(ANONYMOUS_PREFIX):
            return None
        return self._session.user_id

    @property
    def id_prefix(self) -> str | None:
        """The first characters of the session ID (safe to log), or ``None``."""
        self._load()
        return self._session.id_prefix if self._session else None

    # -- writing ---------------------------------------------------------------------------

    def _changes(self) -> tuple[dict[str, Any], list[str]]:
        changed = {
            name: value
            for name, value in self._data.items()
            if name not in self._snapshot
            or self._snapshot[name] is None
            or _encoded(value) != self._snapshot[name]
        }
        removed = [name for name in self._snapshot if name not in self._data]
        return changed, removed

    def _save(self, ip: str | None, user_agent: str | None) -> None:
        """Write what changed since the read (one round trip), or nothing."""
        if not self._loaded:
            return
        changed, removed = self._changes()
        if not changed and not removed:
            return
        if "_permanent" in changed:
            self._cookie = "set"  # the cookie's lifetime changes with it
        if self._session is None:
            if not self._data:
                return
            user = ANONYMOUS_PREFIX + secrets.token_urlsafe(16)
            self._adopt(self._store.create(user, self._data, ip=ip, user_agent=user_agent))
            self._cookie = "set"
            return
        if not self._data and self.user_id is None:
            # An anonymous session emptied: nothing is left to keep.
            self._store.revoke(self._session.id)
            self._adopt(None)
            self._cookie = "clear"
            return
        try:
            self._adopt(self._store.update(self._session.id, changed, remove=removed))
        except SessionNotFound:
            # Ended meanwhile (logged out everywhere, or expired): that decision wins; the
            # change is not written into a new session behind the user's back.
            self._adopt(None)
            self._cookie = "clear"


def _current() -> RedkitSession:
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, RedkitSession):
        raise ConfigurationError(
            "flask.session is not a redkit session: set the app up with redkit.flask.Redkit "
            "(and keep REDKIT_SESSIONS on), and give it a SECRET_KEY"
        )
    return session


def _client() -> tuple[str | None, str | None]:
    """(client IP, user agent) of the current request, for the session's record."""
    ip = client_ip(_scope(request), _state().trusted)
    return (None if ip == "unknown" else ip), request.headers.get("User-Agent")


def _scope(req: Request) -> dict[str, Any]:
    """The parts of an ASGI-like scope that :mod:`redkit.ratelimit.address` reads."""
    environ = req.environ
    peer = environ.get("REMOTE_ADDR")
    headers = []
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded:
        headers.append((b"x-forwarded-for", forwarded.encode("latin-1")))
    return {"client": (peer, 0) if peer else None, "headers": headers, "type": "http"}


def login(user_id: str | int, data: Mapping[str, Any] | None = None) -> None:
    """Sign ``user_id`` in: a new session (new ID, new cookie) holding what the session held
    so far plus ``data``, and the old one ended. One round trip, two if there was a stored
    session. An int ``user_id`` reads back as its decimal text.

    Raises :class:`~redkit.errors.InvalidInput` for a bad user ID (one starting with
    :data:`ANONYMOUS_PREFIX` among them) or data that is not JSON; then nothing changed.
    """
    if isinstance(user_id, str) and user_id.startswith(ANONYMOUS_PREFIX):
        raise InvalidInput(f"user IDs starting {ANONYMOUS_PREFIX!r} are reserved")
    if data is not None and not isinstance(data, Mapping):
        raise InvalidInput("data must be a mapping of field names to JSON values")
    session = _current()
    session._load()
    merged = {**session._data, **(data or {})}
    ip, agent = _client()
    new = session._store.create(user_id, merged, ip=ip, user_agent=agent)
    if session._session is not None:
        session._store.revoke(session._session.id)
    session._adopt(new)
    session._cookie = "set"


def rotate_session() -> None:
    """Give the current session a new ID (the old one stops working at once), keeping its
    user and data; call it when privileges change (sudo mode). A session not stored yet has
    no ID to protect: nothing is done. Raises SessionNotFound if it ended meanwhile."""
    session = _current()
    session._load()
    if session._session is None:
        return
    # Only the ID changes: this request's changes are still measured against what it read,
    # and written (under the new ID) at its end.
    session._session = session._store.rotate(session._session.id)
    session._cookie = "set"


def logout() -> bool:
    """End the current session and clear its cookie; False if there was none."""
    session = _current()
    session._load()
    ended = session._store.revoke(session._session.id) if session._session else False
    session._adopt(None)
    session._cookie = "clear"
    return ended


def logout_everywhere() -> int:
    """End every session of the signed-in user, this one included; returns how many ended.
    Raises :class:`~redkit.errors.SessionNotFound` when nobody is signed in."""
    session = _current()
    user = session.user_id
    if user is None:
        raise SessionNotFound("nobody is signed in on this session: nothing to log out")
    ended = session._store.revoke_all(user)
    session._adopt(None)
    session._cookie = "clear"
    return ended


class RedkitSessionInterface(SessionInterface):
    """Flask's ``SessionInterface`` on redkit; installed by :class:`redkit.flask.Redkit`."""

    # The signer of the last keys seen: making one per request was a tenth of a session
    # read's client time. Bounded: one entry, replaced when the keys change.
    _last_signer: tuple[tuple[Any, ...], Signer] | None = None

    def _signer(self, app: Flask) -> Signer | None:
        if not app.secret_key:
            return None
        keys = (*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key)
        last = self._last_signer
        if last is not None and last[0] == keys:
            return last[1]
        # itsdangerous signs with the last key and verifies with any of them.
        signer = Signer(list(keys), salt=_SALT, key_derivation="hmac", digest_method=hashlib.sha256)
        self._last_signer = (keys, signer)
        return signer

    def open_session(self, app: Flask, request: Request) -> RedkitSession | None:
        signer = self._signer(app)
        if signer is None:
            return None  # Flask's null session: it says a SECRET_KEY is needed
        value = request.cookies.get(self.get_cookie_name(app))
        token: str | None = None
        if value and len(value) <= _MAX_COOKIE:
            try:
                token = signer.unsign(value).decode()
            except (BadSignature, UnicodeDecodeError):
                token = None
        return RedkitSession(_state(app).store, token, stale=bool(value) and token is None)

    def _secure(self, app: Flask, request: Request) -> bool:
        setting = app.config["REDKIT_SESSION_COOKIE_SECURE"]
        if setting is not None:
            return bool(setting)
        if self.get_cookie_secure(app):
            return True
        return request.is_secure or not is_loopback_host(request.host)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, RedkitSession):
            return
        if session.accessed:
            response.vary.add("Cookie")
        try:
            session._save(*_client())
        except ConnectionLost as exc:
            log.warning("session not saved, Redis unreachable; answering 503: %s", exc)
            response.status_code = 503
            response.set_data(
                json.dumps(
                    {
                        "error": "unavailable",
                        "message": "the service cannot reach its data store; try again shortly",
                    }
                )
            )
            response.mimetype = "application/json"
            response.headers["Retry-After"] = str(_state(app).retry_after)
            response.headers["Cache-Control"] = "no-store"
        if session._cookie is None:
            return
        same_site = self.get_cookie_samesite(app) or "Lax"
        if same_site.lower() not in ("lax", "strict", "none"):
            raise ConfigurationError(
                f"SESSION_COOKIE_SAMESITE must be 'Lax', 'Strict' or 'None', got {same_site!r}"
            )
        name = self.get_cookie_name(app)
        # Browsers refuse these without Secure, whatever the host.
        secure = (
            same_site.lower() == "none"
            or name.startswith(("__Secure-", "__Host-"))
            or self._secure(app, request)
        )
        options: dict[str, Any] = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "httponly": self.get_cookie_httponly(app),
            "secure": secure,
            "samesite": same_site,
        }
        stored = session._session
        signer = self._signer(app)
        if session._cookie == "set" and stored is not None and signer is not None:
            expires = (
                datetime.fromtimestamp(stored.absolute_expires_at, UTC)
                if session.permanent
                else None
            )
            response.set_cookie(name, signer.sign(stored.id).decode(), expires=expires, **options)
        else:
            response.delete_cookie(name, **options)
        # A response that sets or clears a session cookie is this client's alone.
        response.cache_control.private = True
