"""Who may look and who may act: roles, the ``auth`` callback, CSRF tokens, masking.

The dashboard has no users of its own. The application that mounts it passes ``auth``, a
function of the request (plain or ``async``) that answers with a :class:`Role`, a
:class:`Viewer` (a role and a name for the audit log) or ``None`` (no entry). There is no
default: a dashboard mounted without ``auth`` would let anyone drain the queues.
"""

from __future__ import annotations

import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from starlette.requests import HTTPConnection

from redkit.errors import ConfigurationError

__all__ = [
    "DEFAULT_SENSITIVE_FIELDS",
    "MASK",
    "Auth",
    "Masker",
    "Role",
    "Viewer",
]

CSRF_COOKIE = "redkit_dashboard_csrf"
CSRF_HEADER = "x-csrf-token"
MASK = "••••••"
DEFAULT_SENSITIVE_FIELDS: tuple[str, ...] = (
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
)
"""A payload field is masked when its name contains one of these (case-insensitive)."""


class Role(StrEnum):
    """What a viewer of the dashboard may do."""

    ADMIN = "admin"
    """Sees everything and may act (retry, cancel, delete, pause, release, revoke, ...)."""
    READ_ONLY = "read-only"
    """Sees everything (sensitive fields masked, as for admins); every action answers 403."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """A role and the name the audit log records for the viewer's actions."""

    role: Role
    name: str = ""


Auth = Callable[[HTTPConnection], "Role | Viewer | Awaitable[Role | Viewer | None] | None"]
"""``auth(request) -> Role | Viewer | None`` (plain or async): ``None`` lets nobody in."""


def check_auth(auth: object) -> Auth:
    if auth is None or not callable(auth):
        raise ConfigurationError(
            "dashboard_app needs auth=: a function (request) -> Role | Viewer | None that says "
            "who may see the dashboard (Role.ADMIN acts, Role.READ_ONLY only looks); there is "
            "no default, so that a mounted dashboard is never open to everyone"
        )
    return cast(Auth, auth)


async def resolve_viewer(auth: Auth, conn: HTTPConnection, read_only: bool) -> Viewer | None:
    """The viewer of this request, or None. ``read_only`` caps every role at READ_ONLY."""
    answer: Any = auth(conn)
    if inspect.isawaitable(answer):
        answer = await answer
    if answer is None:
        return None
    if isinstance(answer, Viewer):
        viewer = answer
    elif isinstance(answer, Role):
        client = conn.client.host if conn.client else "unknown"
        viewer = Viewer(answer, f"{answer.value}@{client}")
    else:
        # A truthy string or a bool would be a bug in the callback: refuse rather than guess.
        raise ConfigurationError(
            f"the dashboard's auth callback returned {answer!r}; return a Role, a Viewer or None"
        )
    if read_only and viewer.role is not Role.READ_ONLY:
        viewer = Viewer(Role.READ_ONLY, viewer.name)
    return viewer


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(conn: HTTPConnection, sent: str | None) -> bool:
    """Double submit: the token sent with the request (a header only JavaScript of this
    origin can set) must equal the cookie's, compared in constant time."""
    cookie = conn.cookies.get(CSRF_COOKIE)
    if not cookie or not sent or len(sent) > 200:
        return False
    return hmac.compare_digest(cookie.encode(), sent.encode())


class Masker:
    """Replaces the values of sensitive fields (by name, at any depth) with :data:`MASK`."""

    def __init__(self, fields: Iterable[str]) -> None:
        if isinstance(fields, str):
            raise ConfigurationError("sensitive_fields is a list of names, not one string")
        self.words = tuple(sorted({str(f).lower() for f in fields if str(f)}))

    def sensitive(self, name: str) -> bool:
        low = name.lower()
        return any(word in low for word in self.words)

    def __call__(self, value: Any, depth: int = 0) -> Any:
        if depth > 32:
            return MASK  # deeper than any real payload: do not walk a pathological one
        if isinstance(value, Mapping):
            return {
                k: (MASK if self.sensitive(str(k)) else self(v, depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(v, depth + 1) for v in value]
        return value
