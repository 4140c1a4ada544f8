"""Sessions: secure IDs, idle and absolute timeouts, log out everywhere, a permission cache.

``store = rk.sessions(idle_ttl=..., absolute_ttl=...)``; see :class:`SessionStore`. The ASGI
middleware and FastAPI dependencies live in :mod:`redkit.sessions.middleware` (the only module
here that imports Starlette).
"""

from redkit.errors import AmbiguousSessionPrefix, SessionNotFound
from redkit.sessions.store import (
    ACTIVITY_MINUTES,
    DEFAULT_MAX_BYTES,
    MIN_PREFIX_LENGTH,
    Permissions,
    Session,
    SessionActivity,
    SessionInfo,
    SessionStore,
)

__all__ = [
    "ACTIVITY_MINUTES",
    "DEFAULT_MAX_BYTES",
    "MIN_PREFIX_LENGTH",
    "AmbiguousSessionPrefix",
    "Permissions",
    "Session",
    "SessionActivity",
    "SessionInfo",
    "SessionNotFound",
    "SessionStore",
]
