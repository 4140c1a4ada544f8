"""Flask integration: the ``Redkit`` extension, server-side sessions, rate limits, and a
Flask-Caching backend (``CACHE_TYPE = "redkit.flask.RedkitCache"``, :mod:`redkit.flask.caching`).

::

    from flask import Flask, session
    from redkit.flask import Limiter, Redkit, login, logout

    app = Flask(__name__)
    app.config["SECRET_KEY"] = "..."              # signs the session cookie
    app.config["REDKIT_URL"] = "redis://localhost:6379/0"
    Redkit(app)                                     # or ext = Redkit(); ext.init_app(app)
    limiter = Limiter()

    @app.post("/login")
    @limiter.limit("5/minute")
    def sign_in():
        login(user.id)                              # new session ID: no fixation
        ...

Everything runs on the sync API (:mod:`redkit.sync`): no event loop, one round trip per call,
one client per process. ``pip install 'redkit[flask]'``.
"""

import contextlib

from redkit.flask.extension import EXTENSION_KEY, Redkit, current_redkit, session_store
from redkit.flask.ratelimit import Limiter, client_ip_key, parse_rate, user_or_ip
from redkit.flask.sessions import (
    ANONYMOUS_PREFIX,
    RedkitSession,
    RedkitSessionInterface,
    login,
    logout,
    logout_everywhere,
    rotate_session,
)

# The limits storage registers the redkit:// schemes with limits when it is imported; limits
# (which Flask-Limiter brings) is optional.
with contextlib.suppress(ImportError):
    from redkit.flask.storage import RedkitStorage as RedkitStorage

# Flask-Caching finds the backend by this name (CACHE_TYPE); Flask-Caching is optional.
with contextlib.suppress(ImportError):
    from redkit.flask.caching import RedkitCache as RedkitCache

__all__ = [
    "ANONYMOUS_PREFIX",
    "EXTENSION_KEY",
    "Limiter",
    "Redkit",
    "RedkitSession",
    "RedkitSessionInterface",
    "client_ip_key",
    "current_redkit",
    "login",
    "logout",
    "logout_everywhere",
    "parse_rate",
    "rotate_session",
    "session_store",
    "user_or_ip",
]
