"""FastAPI dependencies on :class:`~redkit.web.RedkitWeb`: the client, the session, the user.

They find the app's ``RedkitWeb`` in the request itself, so routers in other modules need
no import of the object::

    from redkit.web import LoggedInDep, RedkitDep, SessionDep

    @router.get("/me")
    async def me(session: LoggedInDep) -> dict[str, str]:   # 401 without a live session
        return {"user": session.user_id}

The ``...Dep`` names are ``Annotated`` aliases (``SessionDep`` is
``Annotated[RequestSession, Depends(get_session)]``); the functions work with ``Depends``
directly and in Starlette endpoints (``get_session(request)``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

import redkit
from redkit.cache import Cache
from redkit.notify import NotificationBus
from redkit.sessions.middleware import SCOPE_KEY, RequestSession, not_signed_in
from redkit.sessions.store import Session
from redkit.web.app import RedkitWeb, web_of

__all__ = [
    "BusDep",
    "CacheDep",
    "LoggedInDep",
    "RedkitDep",
    "SessionDep",
    "WebDep",
    "current_user",
    "get_bus",
    "get_cache",
    "get_redkit",
    "get_session",
    "get_web",
    "require_login",
    "require_user",
]

_USER_KEY = "redkit.web.user"


def get_web(conn: HTTPConnection) -> RedkitWeb:
    """The app's :class:`~redkit.web.RedkitWeb`."""
    return web_of(conn)


def get_redkit(conn: HTTPConnection) -> redkit.Redkit:
    """The connected :class:`~redkit.Redkit` (also ``app.state.redkit``)."""
    return web_of(conn).rk


def get_session(conn: HTTPConnection) -> RequestSession:
    """The request's session handle: ``login``, ``logout``, ``update``, ``rotate``;
    ``.session`` is ``None`` for an anonymous request."""
    web = web_of(conn)
    if web.session_config is None:
        raise RuntimeError("sessions are off in this RedkitWeb (sessions=False)")
    handle = conn.scope.get(SCOPE_KEY)
    if not isinstance(handle, RequestSession):
        raise RuntimeError("the request did not pass through RedkitWeb's middleware")
    return handle


def require_login(conn: HTTPConnection) -> Session:
    """The live :class:`~redkit.sessions.Session`, or ``401 Unauthorized``."""
    session = get_session(conn).session
    if session is None:
        raise not_signed_in()
    return session


async def current_user(conn: HTTPConnection) -> Any:
    """The signed-in user (what ``user_loader`` returns; by default the user ID), or None.
    Loaded once per request and session."""
    session = get_session(conn).session
    if session is None:
        return None
    memo = conn.scope.get(_USER_KEY)
    if memo is not None and memo[0] == session.id:
        return memo[1]
    user = await web_of(conn).load_user(session)
    conn.scope[_USER_KEY] = (session.id, user)
    return user


async def require_user(conn: HTTPConnection) -> Any:
    """Like :func:`current_user`, but ``401 Unauthorized`` without a user."""
    user = await current_user(conn)
    if user is None:
        raise not_signed_in()
    return user


def get_cache(conn: HTTPConnection) -> Cache:
    """The app's :class:`~redkit.cache.Cache` (``await cache.invalidate("products")``)."""
    return web_of(conn).cache


def get_bus(conn: HTTPConnection) -> NotificationBus:
    """The app's :class:`~redkit.notify.NotificationBus`."""
    return web_of(conn).bus


WebDep = Annotated[RedkitWeb, Depends(get_web)]
RedkitDep = Annotated[redkit.Redkit, Depends(get_redkit)]
SessionDep = Annotated[RequestSession, Depends(get_session)]
LoggedInDep = Annotated[Session, Depends(require_login)]
CacheDep = Annotated[Cache, Depends(get_cache)]
BusDep = Annotated[NotificationBus, Depends(get_bus)]
