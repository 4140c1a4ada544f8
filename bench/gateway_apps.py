"""The apps that bench/gateway.py serves, each under uvicorn in a process of its own.

``python -m bench.gateway_apps STACK --redis-url URL --port PORT --namespace NS`` serves one:

- ``redkit``: FastAPI with redkit's ``SessionMiddleware`` (signed cookie, 7-day idle
  lifetime), ``RateLimitMiddleware`` with a ``TierPolicy`` (tier from the session, per user;
  anonymous callers by IP; IETF and ``X-RateLimit-*`` headers) and ``CacheMiddleware`` with a
  per-user rule for ``GET /api/projects`` (10 minutes), wired from the public API the way the
  platform's gateway wires them (src/redkit/platform/gateway.py), not from its modules.
- ``redkitweb``: the same stack installed by ``redkit.web.RedkitWeb`` (one middleware).
- ``peer``: the same behaviour from the Python peers: starsessions (Redis store, rolling
  7-day lifetime, autoloaded), slowapi (Redis storage, per-user tier limits from the session,
  rate-limit headers on) and fastapi-cache2 (Redis backend, a per-user key).
- ``direct``: the same endpoint with none of the three middlewares (the gateway's own cost
  is the difference).

Every app has ``POST /bench/login?user=ID`` (signs in: the response sets the session cookie)
and ``GET /bench/calls`` (how many times the endpoint ran: a cache hit never runs it).
``--profile FILE`` runs the server under cProfile (CPU time) and writes the stats there when it
stops (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import secrets
import signal
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

import redkit
from redkit.cache.middleware import CacheMiddleware, CacheRule
from redkit.ratelimit.middleware import RateLimitMiddleware
from redkit.ratelimit.policy import Identity, TierPolicy
from redkit.sessions.middleware import SessionMiddleware, current_session

STACKS = ("redkit", "redkitweb", "peer", "direct")
PATH = "/api/projects"
BIG = 10**9
"""Every tier's limit in the run: the figure is the allowed request, the common path."""
TIERS: Mapping[str, list[tuple[int, float]]] = {
    "anonymous": [(BIG, 60)],
    "user": [(BIG, 60)],
    "premium": [(BIG, 60)],
    "admin": [(BIG, 60)],
}
CACHE_TTL = 600  # the issue: GET /api/projects cached 10 minutes, per user
SESSION_DAYS = 7  # the brief: a 7-day session, renewed by activity
PROJECTS = 10


class _Calls:
    """How many times the endpoint ran (the cached stacks run it once per user)."""

    count = 0


def projects_of(user: str) -> list[dict[str, Any]]:
    """The endpoint's work: the caller's projects (the same list on every stack)."""
    _Calls.count += 1
    return [
        {
            "id": n,
            "name": f"project-{n}",
            "owner": user,
            "namespace": f"p{n}",
            "members": 3,
            "created_at": "2026-01-01T00:00:00+00:00",
        }
        for n in range(PROJECTS)
    ]


def _common_routes(app: FastAPI) -> None:
    @app.get("/bench/calls")
    async def calls() -> dict[str, int]:
        return {"calls": _Calls.count}


# -- redkit -----------------------------------------------------------------------------------


def _redkit_routes(app: FastAPI) -> None:
    _common_routes(app)

    @app.post("/bench/login")
    async def login(request: Request, user: str) -> dict[str, str]:
        await current_session(request).login(user, {"type": "user"})
        return {"user": user}

    @app.get(PATH)
    async def projects(request: Request) -> list[dict[str, Any]]:
        session = current_session(request).session
        return projects_of(session.user_id if session else "anonymous")


def _tier_of(scope: Mapping[str, Any]) -> Identity | None:
    # As the platform's gateway: the session middleware (outside) has resolved the session.
    session = current_session(HTTPConnection(cast(Any, scope))).session
    if session is None:
        return None
    return Identity(str(session.data.get("type", "user")), session.user_id)


def redkit_app(rk: redkit.Redkit, signing_key: str) -> FastAPI:
    """Sessions outermost, then the tier limit, then the per-user cache (added inner first)."""
    app = FastAPI()
    _redkit_routes(app)
    rule = CacheRule(PATH, ttl=CACHE_TTL, tags=["projects"], per_user=True)
    app.add_middleware(CacheMiddleware, cache=rk.cache(name="gateway"), rules=[rule])
    policy = TierPolicy(rk, _tier_of, tiers=TIERS)
    app.add_middleware(RateLimitMiddleware, policy=policy, legacy_headers=True)
    store = rk.sessions(idle_ttl=timedelta(days=SESSION_DAYS))
    app.add_middleware(SessionMiddleware, store=store, signing_key=signing_key)
    return app


def redkitweb_app(url: str, namespace: str, signing_key: str) -> FastAPI:
    """The same stack through ``RedkitWeb`` (it connects in the app's lifespan)."""
    from redkit.web import CacheConfig, RateLimitConfig, RedkitWeb, SessionConfig

    app = FastAPI()
    _redkit_routes(app)
    RedkitWeb(
        app,
        url=url,
        namespace=namespace,
        sessions=SessionConfig(idle_ttl=timedelta(days=SESSION_DAYS), signing_key=signing_key),
        rate_limits=RateLimitConfig(
            tiers=TIERS, tier_of=lambda s: str(s.data.get("type", "user")), legacy_headers=True
        ),
        cache=CacheConfig(
            rules=[CacheRule(PATH, ttl=CACHE_TTL, tags=["projects"], per_user=True)],
            name="gateway",
        ),
    )
    return app


# -- the peers --------------------------------------------------------------------------------


def peer_app(url: str, prefix: str) -> FastAPI:
    """FastAPI + starsessions + slowapi + fastapi-cache2, each as its documentation sets it up."""
    from fastapi_cache import FastAPICache
    from fastapi_cache.backends.redis import RedisBackend
    from fastapi_cache.decorator import cache
    from redis.asyncio import Redis
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address
    from starsessions import SessionAutoloadMiddleware, regenerate_session_id
    from starsessions import SessionMiddleware as StarSessions
    from starsessions.stores.redis import RedisStore

    client = Redis.from_url(url)
    limits = {tier: f"{pairs[0][0]}/minute" for tier, pairs in TIERS.items()}

    def caller(request: Request) -> str:
        """slowapi's key: the tier and the user of the session, or the client's address."""
        user = request.session.get("user")
        if user:
            return f"{user['type']}:{user['id']}"
        return "anonymous:" + str(get_remote_address(request))

    def limit_for(key: str) -> str:
        return limits[key.partition(":")[0]]

    def per_user(
        func: Any, namespace: str, *, request: Request, response: Response, **_: Any
    ) -> str:
        user = request.session.get("user")
        who = user["id"] if user else "anonymous"
        return f"{namespace}:{who}:{request.url.path}?{request.url.query}"

    # limits' sliding window counter: the algorithm of redkit's TierPolicy default.
    limiter = Limiter(
        key_func=caller,
        storage_uri=url,
        strategy="sliding-window-counter",
        headers_enabled=True,
        key_prefix=prefix + "limits",
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
    app.add_middleware(SessionAutoloadMiddleware)
    app.add_middleware(
        StarSessions,
        store=RedisStore(connection=client, prefix=prefix + "session:"),
        lifetime=timedelta(days=SESSION_DAYS),
        rolling=True,
        cookie_https_only=False,  # plain HTTP on loopback, as redkit's automatic Secure
    )
    FastAPICache.init(RedisBackend(client), prefix=prefix + "cache")
    _common_routes(app)

    @app.post("/bench/login")
    async def login(request: Request, user: str) -> dict[str, str]:
        regenerate_session_id(request)  # a new ID on sign-in, as redkit's login
        request.session["user"] = {"id": user, "type": "user"}
        return {"user": user}

    async def projects(request: Request, response: Response) -> list[dict[str, Any]]:
        user = request.session.get("user")
        return projects_of(user["id"] if user else "anonymous")

    # The limit wraps the cache: a request is counted (and refused when over) before a hit.
    # (The decorators applied as calls: the peers are untyped where mypy runs.)
    limited = limiter.limit(limit_for)(cache(expire=CACHE_TTL, key_builder=per_user)(projects))
    app.get(PATH)(limited)
    return app


def direct_app() -> FastAPI:
    """The endpoint alone: what the request costs without the gateway's three layers."""
    app = FastAPI()
    _common_routes(app)

    @app.post("/bench/login")
    async def login(user: str) -> JSONResponse:
        return JSONResponse({"user": user}, headers={"set-cookie": f"session={user}"})

    @app.get(PATH)
    async def projects(request: Request) -> list[dict[str, Any]]:
        return projects_of(request.cookies.get("session", "anonymous"))

    return app


# -- serving ----------------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    rk: redkit.Redkit | None = None
    if args.stack == "redkit":
        rk = await redkit.connect(args.redis_url, namespace=args.namespace)
        app = redkit_app(rk, args.signing_key)
    elif args.stack == "redkitweb":
        app = redkitweb_app(args.redis_url, args.namespace, args.signing_key)
    elif args.stack == "peer":
        app = peer_app(args.redis_url, args.namespace + ":")
    else:
        app = direct_app()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,  # as in production: the access log would cost more than the stack
        backlog=4096,
        timeout_graceful_shutdown=2,
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        if rk is not None:
            await rk.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_apps")
    parser.add_argument("stack", choices=STACKS)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--namespace", default="bench-gw-" + secrets.token_hex(4))
    parser.add_argument("--signing-key", default=secrets.token_urlsafe(32))
    parser.add_argument("--profile", help="write cProfile stats of the server here on exit")
    args = parser.parse_args(argv)
    if not args.profile:
        asyncio.run(serve(args))
        return
    # uvicorn re-raises the SIGTERM it caught once it has shut down, which would end the
    # process before the stats are written: a handler of ours takes that second signal.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # CPU time, not wall time: on a shared machine the wall clock also counts the time the
    # process waited for a CPU, spread over whatever code was running then.
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        asyncio.run(serve(args))
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
