"""redkit for Starlette and FastAPI: one object, connected in the app's lifespan.

::

    from fastapi import Depends, FastAPI
    from redkit.web import CacheRule, LoggedInDep, RedkitWeb, SessionDep

    app = FastAPI()
    web = RedkitWeb(app, cache=[CacheRule("/products", ttl=60, tags=["products"])])

    @app.post("/login")
    async def login(name: str, session: SessionDep) -> dict[str, str]:
        await session.login(name)                  # a new session ID, cookie set
        return {"user": name}

    @app.get("/me")
    async def me(session: LoggedInDep) -> dict[str, str]:   # 401 without a session
        return {"user": session.user_id}

    @app.get("/search", dependencies=[Depends(web.rate_limit(30, 60))])
    async def search(q: str) -> list[str]: ...

``uvicorn myapp:app`` (or ``with TestClient(app) as client:``) connects when the app starts,
inside its event loop; nothing connects at import. See :class:`RedkitWeb` for the options and
:mod:`redkit.web.deps` for the dependencies.
"""

from redkit.cache.middleware import CacheRule
from redkit.web.app import RedkitMiddleware, RedkitWeb, web_of
from redkit.web.config import CacheConfig, RateLimitConfig, SessionConfig
from redkit.web.deps import (
    BusDep,
    CacheDep,
    LoggedInDep,
    RedkitDep,
    SessionDep,
    WebDep,
    current_user,
    get_bus,
    get_cache,
    get_redkit,
    get_session,
    get_web,
    require_login,
    require_user,
)
from redkit.web.identity import request_session, session_identity

__all__ = [
    "BusDep",
    "CacheConfig",
    "CacheDep",
    "CacheRule",
    "LoggedInDep",
    "RateLimitConfig",
    "RedkitDep",
    "RedkitMiddleware",
    "RedkitWeb",
    "SessionConfig",
    "SessionDep",
    "WebDep",
    "current_user",
    "get_bus",
    "get_cache",
    "get_redkit",
    "get_session",
    "get_web",
    "request_session",
    "require_login",
    "require_user",
    "session_identity",
    "web_of",
]
