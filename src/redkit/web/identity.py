"""Who is calling, for rate limits: the request's session, whatever the middleware order."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, cast

from redkit.ratelimit.policy import Identity
from redkit.sessions.middleware import SCOPE_KEY, RequestSession, find_session_middleware

if TYPE_CHECKING:
    from redkit.sessions.store import Session

__all__ = ["request_session", "session_identity"]

log = logging.getLogger("redkit.web")


async def request_session(scope: MutableMapping[str, Any]) -> RequestSession | None:
    """The request's session, from any layer, whatever the middleware order.

    :func:`~redkit.sessions.middleware.resolve_session`, which finds the session middleware
    in the lifespan state, and without a lifespan (``httpx.ASGITransport``) by following the
    application's middleware stack (``scope["app"]``). One store read per request, shared
    with the session middleware. ``None`` if the app has no session middleware.
    """
    handle = scope.get(SCOPE_KEY)
    if isinstance(handle, RequestSession):
        return handle
    middleware = find_session_middleware(scope, scope.get("app"))
    return await middleware.resolve(scope) if middleware is not None else None


def session_identity(
    *,
    tier_of: Callable[[Session], str | None] | None = None,
    user_tier: str = "user",
    tiers: Iterable[str] | None = None,
) -> Callable[[Mapping[str, Any]], Awaitable[Identity | None]]:
    """An ``identify`` hook for :class:`~redkit.ratelimit.policy.TierPolicy`: a request with
    a live session is ``Identity(tier, user_id)``, one without is anonymous (``None``).

    The tier is ``tier_of(session)``, by default ``session.data["tier"]``; a session that
    names no tier (or one missing from ``tiers``) is in ``user_tier``. Session data is
    written by the application only, so a client cannot choose its tier.
    """
    known = frozenset(tiers) if tiers is not None else None
    warned: set[str] = set()

    async def identify(scope: Mapping[str, Any]) -> Identity | None:
        # An ASGI scope is a dict; the policy interface promises only to read it.
        handle = await request_session(cast(MutableMapping[str, Any], scope))
        session = handle.session if handle is not None else None
        if session is None:
            return None
        tier = tier_of(session) if tier_of is not None else session.data.get("tier")
        if tier is not None and (not isinstance(tier, str) or (known and tier not in known)):
            text = repr(tier)[:64]
            if text not in warned and len(warned) < 100:  # bounded: a few distinct warnings
                warned.add(text)
                log.warning("session tier %s is not in the tier table; using %r", text, user_tier)
            tier = None
        return Identity(tier or user_tier, str(session.user_id))

    return identify
