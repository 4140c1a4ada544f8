"""The ``Redkit`` Flask extension: configuration, one sync client per process, 503 on outage.

Config keys (``app.config``), read when the app first talks to Redis:

``REDKIT_URL``
    The server (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
    ``redis+cluster://``); ``None`` (default) means ``REDIS_URL`` from the environment, else
    the embedded Valkey of ``./.redkit/data``.
``REDKIT_NAMESPACE``
    The key prefix (default ``"rk"``).
``REDKIT_SESSIONS``
    Install the server-side session interface (default ``True``).
``REDKIT_SESSION_IDLE_TTL``, ``REDKIT_SESSION_ABSOLUTE_TTL``, ``REDKIT_SESSION_MAX_PER_USER``
    The session store's limits (7 days, 30 days, no cap); seconds or ``timedelta``.
``REDKIT_SESSION_COOKIE_SECURE``
    ``None`` (default): ``Secure`` on HTTPS and on every host but a loopback one;
    ``True``/``False`` fix it. Flask's ``SESSION_COOKIE_SECURE = True`` counts as ``True``.
``REDKIT_TRUSTED_PROXIES``
    Proxies whose ``X-Forwarded-For`` is believed, for the client address of sessions and
    rate limits (``["10.0.0.0/8"]``; none by default: the TCP peer is the client).
``REDKIT_RETRY_AFTER``
    The ``Retry-After`` of a 503 while Redis is unreachable (seconds, default 2).

The client is made lazily, in the process that uses it: a server that forks its workers after
loading the app (gunicorn ``--preload``) gives each worker its own connections, never the
parent's sockets. Every client is closed when its process exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, jsonify

import redkit.sync
from redkit.errors import ConfigurationError, ConnectionLost
from redkit.ratelimit.address import ClientIP, TrustedProxies

if TYPE_CHECKING:
    from redkit.sync import SessionStore

__all__ = ["EXTENSION_KEY", "Redkit", "current_redkit", "session_store"]

log = logging.getLogger("redkit.flask")

EXTENSION_KEY = "redkit"
"""Where the extension keeps its per-app state: ``app.extensions["redkit"]``."""

_DEFAULTS: dict[str, Any] = {
    "REDKIT_URL": None,
    "REDKIT_NAMESPACE": "rk",
    "REDKIT_SESSIONS": True,
    "REDKIT_SESSION_IDLE_TTL": timedelta(days=7),
    "REDKIT_SESSION_ABSOLUTE_TTL": timedelta(days=30),
    "REDKIT_SESSION_MAX_PER_USER": None,
    "REDKIT_SESSION_COOKIE_SECURE": None,
    "REDKIT_TRUSTED_PROXIES": (),
    "REDKIT_RETRY_AFTER": 2,
}

# Every live state, so that one exit hook closes the clients of every app in the process.
_STATES: weakref.WeakSet[_AppState] = weakref.WeakSet()


class _AppState:
    """One app's client and session store, made on first use in each process."""

    def __init__(self, app: Flask) -> None:
        self.config = app.config
        self._lock = threading.Lock()
        self._pid = 0
        self._client: redkit.sync.Redkit | None = None
        self._store: SessionStore | None = None
        retry = app.config["REDKIT_RETRY_AFTER"]
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ConfigurationError(f"REDKIT_RETRY_AFTER must be an int >= 0, got {retry!r}")
        self.retry_after = retry
        self.trusted = TrustedProxies(app.config["REDKIT_TRUSTED_PROXIES"])
        self.client_ip = ClientIP(self.trusted)
        secure = app.config["REDKIT_SESSION_COOKIE_SECURE"]
        if secure is not None and not isinstance(secure, bool):
            raise ConfigurationError(
                f"REDKIT_SESSION_COOKIE_SECURE must be True, False or None, got {secure!r}"
            )

    def client(self) -> redkit.sync.Redkit:
        pid = os.getpid()
        client = self._client
        if client is not None and self._pid == pid:
            return client
        with self._lock:
            if self._client is None or self._pid != pid:
                # A client inherited through fork() is dropped, not closed: its sockets are
                # the parent's, which still uses them.
                self._client = redkit.sync.connect(
                    self.config["REDKIT_URL"], self.config["REDKIT_NAMESPACE"]
                )
                self._store = None
                self._pid = pid
            return self._client

    def store(self) -> SessionStore:
        client = self.client()
        with self._lock:
            if self._store is None or self._store.rk is not client:
                self._store = client.sessions(
                    idle_ttl=self.config["REDKIT_SESSION_IDLE_TTL"],
                    absolute_ttl=self.config["REDKIT_SESSION_ABSOLUTE_TTL"],
                    max_per_user=self.config["REDKIT_SESSION_MAX_PER_USER"],
                )
            return self._store

    def close(self) -> None:
        with self._lock:
            client, self._client, self._store = self._client, None, None
            mine = self._pid == os.getpid()
        if client is not None and mine:
            client.close()


@atexit.register
def _close_all() -> None:
    for state in list(_STATES):
        try:
            state.close()
        except Exception:  # at exit: a server already gone must not spoil the others
            log.debug("closing a redkit client at exit failed", exc_info=True)


def _state(app: Flask | None = None) -> _AppState:
    app = app or current_app
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, _AppState):
        raise ConfigurationError(
            "redkit.flask is not set up on this app: call Redkit(app) or ext.init_app(app)"
        )
    return state


def current_redkit() -> redkit.sync.Redkit:
    """The current app's :class:`redkit.sync.Redkit` (connected on first use in a process)."""
    return _state().client()


def session_store() -> SessionStore:
    """The current app's session store, e.g. for an admin's ``session_store().list(user)``."""
    return _state().store()


def _unavailable(error: ConnectionLost) -> tuple[Response, int, dict[str, str]]:
    log.warning("Redis unreachable; answering 503: %s", error)
    body = jsonify(
        error="unavailable",
        message="the service cannot reach its data store; try again shortly",
    )
    headers = {"Retry-After": str(_state().retry_after), "Cache-Control": "no-store"}
    return body, 503, headers


class Redkit:
    """The Flask extension: ``Redkit(app)``, or ``ext = Redkit()`` then ``ext.init_app(app)``
    in an app factory. See the module docs for the ``REDKIT_*`` config keys.

    ``init_app`` installs the server-side session interface (unless ``REDKIT_SESSIONS`` is
    false) and answers a :class:`~redkit.errors.ConnectionLost` raised by a view with
    ``503 Service Unavailable``, ``Retry-After`` and a JSON body.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return "<redkit.flask.Redkit>"

    def init_app(self, app: Flask) -> None:
        """Set the extension up on ``app`` (once per app)."""
        for name, value in _DEFAULTS.items():
            app.config.setdefault(name, value)
        state = _AppState(app)
        app.extensions[EXTENSION_KEY] = state
        _STATES.add(state)
        if app.config["REDKIT_SESSIONS"]:
            from redkit.flask.sessions import RedkitSessionInterface

            app.session_interface = RedkitSessionInterface()
        app.register_error_handler(ConnectionLost, _unavailable)

    @property
    def client(self) -> redkit.sync.Redkit:
        """The current app's client (see :func:`current_redkit`)."""
        return current_redkit()

    @property
    def sessions(self) -> SessionStore:
        """The current app's session store (see :func:`session_store`)."""
        return session_store()
