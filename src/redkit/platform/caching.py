"""The gateway's response cache (redkit's CacheMiddleware) and the tags the services' writes
invalidate.

Two pages are cached at the gateway, inside the rate limit (a hit still counts against the
caller's tier) and inside the session middleware (a hit is served only to a live session):

- ``GET /api/users/{id}`` (auth service), 30 minutes, one entry per user ID for *every
  signed-in caller*: the page holds public fields only, the same whoever asks; anonymous
  callers get the service's 401, which is never stored. Tag ``user:<id>``.
- ``GET /api/projects`` (projects service), 10 minutes, one entry per session (the entry is
  keyed by the request's credentials and served only while that session lives: logout,
  logout-all and revocation make it unreachable at once). Tags ``projects-of:<user id>``, and
  ``projects-of-admins`` for an admin's list (admins see every project).

Every response carries ``X-Cache: HIT | MISS`` (``BYPASS`` for a dead session's credentials).
What is never shared: a response with ``Set-Cookie`` or ``Cache-Control: private | no-store``
(the library refuses to store those), and a per-session page (keyed by the session).

The services invalidate with :func:`invalidate` after their write has committed, through their
own connection: the cache lives in the Valkey every process shares, so the next GET through
any gateway is a miss with the new content (and a computation that began before the
invalidation never stores its stale result after it). Which write makes which entry stale:

==========================================  ================================================
write                                       tags
==========================================  ================================================
create a project (by U)                     ``projects-of:U``, ``projects-of-admins``
delete a project                            ``projects-of:<each member>``, admins' lists
add a member M (not a mere role change)     ``projects-of:M``
remove a member M                           ``projects-of:M``
an admin changes U's type                   ``user:U`` (its ``type``), ``projects-of:U``
==========================================  ================================================

(A role change leaves every cached page as it was: no page shows roles.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Scope

from redkit import Redkit, Session
from redkit.cache import Cache
from redkit.cache.middleware import CacheMiddleware, CacheRule
from redkit.sessions.middleware import current_session

__all__ = [
    "ADMIN_LISTS",
    "CACHE_NAME",
    "PROJECTS_TTL",
    "USER_TTL",
    "gateway_cache",
    "gateway_cache_middleware",
    "invalidate",
    "projects_tag",
    "user_tag",
]

CACHE_NAME = "gateway"
USER_TTL = 30 * 60
PROJECTS_TTL = 10 * 60
ADMIN_LISTS = "projects-of-admins"
# The one audience of the shared user pages: every signed-in caller reads the same entry.
_SIGNED_IN = "any-signed-in-user"


def user_tag(user_id: str) -> str:
    """The tag of ``GET /api/users/<user_id>``."""
    return f"user:{user_id}"


def projects_tag(user_id: str) -> str:
    """The tag of every cached ``GET /api/projects`` of ``user_id`` (all their sessions)."""
    return f"projects-of:{user_id}"


def gateway_cache(rk: Redkit) -> Cache:
    """The gateway's cache. The services make the same one to invalidate it: the same name
    and the default shard count (which depends only on the server being a Cluster), so both
    sides address the same tag sets."""
    return rk.cache(name=CACHE_NAME, default_ttl=PROJECTS_TTL)


def _signed_in(scope: Scope) -> str | None:
    # Called once the session is known live (the cache asks the session layer first): the
    # page is the same for every signed-in caller, so they all share one entry.
    return _SIGNED_IN if current_session(HTTPConnection(scope)).session is not None else None


def _list_tags(session: Session) -> Iterable[str]:
    tags = [projects_tag(session.user_id)]
    if session.data.get("type") == "admin":
        tags.append(ADMIN_LISTS)
    return tags


RULES = (
    CacheRule(
        "/api/users/{user_id}",
        ttl=USER_TTL,
        tags=["user:{user_id}"],
        per_user=_signed_in,
    ),
    CacheRule("/api/projects", ttl=PROJECTS_TTL, per_user=True, session_tags=_list_tags),
)


def gateway_cache_middleware(app: ASGIApp, state: Any) -> ASGIApp:
    """The gateway's CacheMiddleware over ``app`` (a builder for ``LateMiddleware``: the
    cache needs the connection the lifespan opens)."""
    hosts = state.config.allowed_hosts
    return CacheMiddleware(app, cache=gateway_cache(state.rk), rules=RULES, allowed_hosts=hosts)


async def invalidate(rk: Redkit, *tags: str) -> int:
    """Drop the gateway's entries under any of ``tags`` (from any process on the same
    Valkey); the number of entries dropped."""
    if not tags:
        return 0
    return await gateway_cache(rk).invalidate(*tags)
