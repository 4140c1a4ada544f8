"""A service with every layer of RedkitWeb on (sessions, rate limits by tier, a cached route,
a route limit, a user loader, SSE and WebSocket), for the tests of a server that is down or
hangs: ``uvicorn web.outage:app`` with ``REDIS_URL`` pointing at a server the test controls."""

from typing import Annotated, Any

from fastapi import Depends, FastAPI

from redkit.notify.web import allow_all
from redkit.sessions import Session
from redkit.web import (
    CacheRule,
    LoggedInDep,
    RateLimitConfig,
    RedkitWeb,
    SessionDep,
    current_user,
)

app = FastAPI()
web = RedkitWeb(
    app,
    rate_limits=RateLimitConfig(exempt=["/openapi.json"]),
    cache=[CacheRule("/products", ttl=60, tags=["products"])],
)
app.router.routes.extend(web.notification_routes(authorize=allow_all))


@web.user_loader
async def load(session: Session) -> dict[str, Any]:
    # A loader that reads Redis, as most do (here: the session's permissions).
    grants = await web.sessions.permissions(session.user_id, "p1").get()
    return {"id": session.user_id, "grants": grants}


@app.post("/login")
async def login(name: str, session: SessionDep) -> dict[str, str | None]:
    await session.login(name)
    return {"token": session.token}


@app.get("/me")
async def me(session: LoggedInDep) -> dict[str, str]:
    return {"user": session.user_id}


@app.get("/whoami")
async def whoami(user: Annotated[Any, Depends(current_user)]) -> dict[str, Any]:
    return {"user": user}


@app.get("/products")
async def products() -> list[str]:
    return ["tea", "cake"]


@app.get("/search", dependencies=[Depends(web.rate_limit(100, 60))])
async def search(q: str) -> list[str]:
    return [p for p in ["tea", "cake"] if q in p]
