"""The one object that connects a Starlette/FastAPI app to redkit.

:class:`RedkitWeb` connects in the app's lifespan (inside the running event loop, around the
application's own lifespan), puts the client on ``app.state.redkit``, and installs one
middleware that runs sessions, rate limits and the response cache in the only order that
works (outermost first):

1. **sessions**: the request's session is loaded once; its cookie is set on the way out;
2. **rate limits**: the caller is identified by that session (or by IP), and a 429 is sent
   before the cache or the endpoint does any work; the headers are added outside the cache,
   so a cached page never carries another request's counts;
3. **response cache**: hits are served here; the endpoint runs on a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

import redkit
from redkit.client import connect_settings
from redkit.codec import seconds
from redkit.errors import ConfigurationError, InvalidInput, RedkitError
from redkit.ratelimit.limiter import Decision, RateLimiter
from redkit.ratelimit.policy import Admission, TierPolicy, TrustedProxies, client_ip
from redkit.sessions.middleware import (
    REGISTRY_KEY,
    SCOPE_KEY,
    RequestSession,
    SessionMiddleware,
    unavailable_on_connection_lost,
)
from redkit.web.config import CacheConfig, RateLimitConfig, SessionConfig
from redkit.web.identity import session_identity

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute

    from redkit.cache import Cache
    from redkit.cache.middleware import CacheRule
    from redkit.jobs import Worker
    from redkit.notify import NotificationBus
    from redkit.notify.web import AllowedOrigins, Authorize
    from redkit.sessions import SessionStore
    from redkit.sessions.store import Session

__all__ = ["RedkitMiddleware", "RedkitWeb"]

log = logging.getLogger("redkit.web")

P = ParamSpec("P")
R = TypeVar("R")

WEB_SCOPE_KEY = "redkit.web"
"""Where the middleware leaves the :class:`RedkitWeb` in each request's scope (dependencies
find it there, in mounted sub-applications and routers of other modules too)."""

UserLoader = Callable[["Session"], Any]
KeyFunc = Callable[[Request], Awaitable[str] | str]
Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]

_NOT_STARTED = (
    "redkit is not connected: the application's lifespan has not run. Serve the app with "
    "lifespan on (uvicorn's default), enter Starlette's TestClient as a context manager "
    "(`with TestClient(app) as client:`), or wrap an httpx.ASGITransport app in "
    "asgi-lifespan's LifespanManager. Starlette runs no lifespan of a mounted sub-application: "
    "install RedkitWeb on the outermost app"
)

_OTHER_LOOP = (
    "this request runs in another event loop than the one redkit connected in (its "
    "connections belong to that loop). A TestClient used without `with` runs each request in "
    "a loop of its own: use the client that runs the app (`with TestClient(app) as client:`)"
)


class _Runtime:
    """What exists while the app runs: the client and everything made from it."""

    def __init__(self, web: RedkitWeb, rk: redkit.Redkit) -> None:
        self.web = web
        self.rk = rk
        self.loop = asyncio.get_running_loop()
        self.store: SessionStore | None = None
        if web.session_config is not None:
            cfg = web.session_config
            self.store = rk.sessions(
                idle_ttl=cfg.idle_ttl,
                absolute_ttl=cfg.absolute_ttl,
                max_per_user=cfg.max_per_user,
                touch_every=cfg.touch_every,
                **cfg.store_options,
            )
        cache_cfg = web.cache_config
        self.cache: Cache = rk.cache(
            default_ttl=cache_cfg.default_ttl, name=cache_cfg.name, **cache_cfg.options
        )
        self.policy: TierPolicy | None = None
        if web.rate_limit_config is not None:
            self.policy = _tier_policy(rk, web.rate_limit_config)
        self._bus: NotificationBus | None = None
        self._ending: asyncio.Future[None] | None = None
        self.objects: dict[int, Any] = {}
        """Objects made from ``rk`` for the app's decorators and dependencies, by their id."""
        self.chains: dict[int, ASGIApp] = {}
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []
        for key, factory in web._factories.items():
            self.objects[key] = factory(self)

    @property
    def bus(self) -> NotificationBus:
        if self._bus is None:
            self._bus = self.rk.notifications(**self.web.notification_options)
        return self._bus

    def object(self, key: int) -> Any:
        found = self.objects.get(key)
        if found is None:
            found = self.objects[key] = self.web._factories[key](self)
        return found

    def chain(self, app: ASGIApp) -> ASGIApp:
        """``app`` wrapped in the middleware, outermost first: sessions, limits, cache."""
        chain = self.chains.get(id(app))
        if chain is not None:
            return chain
        web = self.web
        chain = app
        if web.cache_config.rules:
            from redkit.cache.middleware import CacheMiddleware

            cfg = web.cache_config
            chain = CacheMiddleware(
                chain,
                cache=self.cache,
                rules=cfg.rules,
                allowed_hosts=cfg.allowed_hosts,
                credential_headers=cfg.credential_headers,
                credential_cookies=cfg.credential_cookies,
            )
        if self.policy is not None:
            from redkit.ratelimit.middleware import RateLimitMiddleware

            assert web.rate_limit_config is not None
            chain = RateLimitMiddleware(
                chain,
                policy=_exempting(self.policy, web.rate_limit_config.exempt),
                legacy_headers=web.rate_limit_config.legacy_headers,
            )
        if self.store is not None:
            assert web.session_config is not None
            chain = SessionMiddleware(chain, self.store, **web.session_config.middleware_options())
        self.chains[id(app)] = chain
        return chain

    def end_streams_on_exit(self) -> Callable[[], None]:
        """Chain onto the server's SIGINT/SIGTERM handlers: when it starts to shut down, end
        the notification streams, so open SSE and WebSocket connections let it finish.

        A server waits for open responses before it runs the lifespan shutdown, and an event
        stream never ends by itself: without this, ``uvicorn`` hangs on Ctrl-C while a
        browser tab listens. Only in the main thread, and only over Python-level handlers
        (the server's); returns what puts the previous handlers back.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = self.loop
        previous: dict[signal.Signals, Any] = {}

        def on_exit(sig: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin_shutdown)
            handler = previous.get(signal.Signals(sig))
            if callable(handler):
                handler(sig, frame)

        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if callable(handler):
                previous[sig] = handler
                signal.signal(sig, on_exit)

        def restore() -> None:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is on_exit:
                    signal.signal(sig, handler)

        return restore

    def begin_shutdown(self) -> None:
        """The server is shutting down: end the notification streams and stop the workers'
        claiming (running jobs go on until the lifespan's shutdown)."""
        for worker, _ in self.workers:
            worker.stop()
        if self._bus is not None and self._ending is None:
            self._ending = asyncio.ensure_future(self._bus.close())

    def start_workers(self) -> None:
        for queues, functions, concurrency, options in self.web._workers:
            worker = self.rk.worker(
                queues, functions, concurrency, **{"handle_signals": False, **options}
            )
            task = asyncio.create_task(worker.run(), name=f"redkit-web-worker-{worker.id[:8]}")
            task.add_done_callback(_report_worker_end)
            self.workers.append((worker, task))

    async def close(self) -> None:
        for worker, _ in self.workers:
            worker.stop()
        for _, task in self.workers:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self._ending is not None:
            with contextlib.suppress(RedkitError):
                await self._ending
        if self._bus is not None:
            with contextlib.suppress(RedkitError):
                await self._bus.close()
        with contextlib.suppress(RedkitError):
            await self.cache.drain()
        await self.rk.close()


def _report_worker_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("a job worker of the app stopped: %s", error, exc_info=error)


def _tier_policy(rk: redkit.Redkit, cfg: RateLimitConfig) -> TierPolicy:
    identify = cfg.identify or session_identity(
        tier_of=cfg.tier_of, user_tier=cfg.user_tier, tiers=cfg.tiers
    )
    return TierPolicy(
        rk,
        identify,
        tiers=cfg.tiers,
        algorithm=cfg.algorithm,
        trusted_proxies=cfg.trusted_proxies,
        anonymous_tier=cfg.anonymous_tier,
        **cfg.limiter_options,
    )


def _exempting(policy: TierPolicy, exempt: Sequence[str]) -> Any:
    if not exempt:
        return policy
    prefixes = tuple(exempt)

    async def exempting(scope: Mapping[str, Any]) -> Admission | None:
        if str(scope.get("path", "")).startswith(prefixes):
            return None
        return await policy(scope)

    return exempting


class RedkitMiddleware:
    """The middleware :class:`RedkitWeb` installs (pure ASGI): it hands each request to the
    session, rate-limit and cache middleware built when the app started.

    While the app runs, ``.app`` is that chain (so layers that look for the session
    middleware by following ``.app`` links find it) and ``.inner`` the application inside.
    """

    def __init__(self, app: ASGIApp, web: RedkitWeb) -> None:
        self.inner = app
        self.app = app
        self.web = web
        self._lifespan_state: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<RedkitMiddleware {self.web!r}>"

    def _started(self, runtime: _Runtime) -> None:
        self.app = chain = runtime.chain(self.inner)
        state = self._lifespan_state
        if isinstance(chain, SessionMiddleware) and state is not None:
            # Layers outside this one find the session middleware where the server copies
            # the lifespan state into every request (redkit.sessions.middleware.resolve_session).
            state.setdefault(REGISTRY_KEY, chain)

    def _stopped(self) -> None:
        self.app = self.inner
        if self._lifespan_state is not None:
            self._lifespan_state.pop(REGISTRY_KEY, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            if scope["type"] == "lifespan" and isinstance(scope.get("state"), dict):
                self._lifespan_state = scope["state"]
            await self.inner(scope, receive, send)
            return
        runtime = self.web._runtime
        if runtime is None:
            raise ConfigurationError(_NOT_STARTED)
        if asyncio.get_running_loop() is not runtime.loop:
            raise ConfigurationError(_OTHER_LOOP)
        scope[WEB_SCOPE_KEY] = self.web
        chain = runtime.chain(self.inner)
        if isinstance(chain, SessionMiddleware):
            await chain(scope, receive, send)  # it answers 503 itself when Redis is away
            return
        await unavailable_on_connection_lost(chain, scope, receive, send)


class RedkitWeb:
    """redkit for a Starlette or FastAPI application::

        app = FastAPI()
        web = RedkitWeb(app, cache=[CacheRule("/products", ttl=60, tags=["products"])])

    Connects (``redkit.connect(url, namespace, ...)``; the embedded Valkey unless
    ``REDIS_URL`` is set) when the app starts, inside its event loop, before the app's own
    lifespan runs, and closes after it. While the app runs, ``web.rk`` and
    ``app.state.redkit`` are the client; ``web.sessions``, ``web.cache`` and ``web.bus`` the
    primitives it installed. Options:

    - ``sessions``: a :class:`SessionConfig` (``True``: the defaults; ``False``: none).
    - ``rate_limits``: a :class:`RateLimitConfig` for limits by tier on every request
      (``True``: 10/min anonymous, 100/min per user, ...); off by default. Per-route limits:
      :meth:`rate_limit`.
    - ``cache``: a :class:`CacheConfig`, or just its list of
      :class:`~redkit.cache.middleware.CacheRule`.
    - ``notifications``: options of ``rk.notifications(...)`` for ``web.bus`` and
      :meth:`notification_routes` (default ``{"history": 100}``).
    - ``user_loader``: ``(session) -> user`` (sync or async) for the ``current_user`` and
      ``require_user`` dependencies; by default the user is the session's user ID.
    - ``end_streams_on_exit``: on the server's SIGINT/SIGTERM, end the notification streams
      (SSE, WebSocket) so the server can finish its graceful shutdown (default on).

    Every option is checked here, so a bad configuration stops the app before it serves
    (``ConfigurationError``); a server that cannot be reached fails the app's start-up.
    """

    def __init__(
        self,
        app: Starlette | None = None,
        *,
        url: str | None = None,
        namespace: str | None = None,
        data_dir: str | Path | None = None,
        connect_timeout: float | timedelta | None = None,
        command_timeout: float | timedelta | None = None,
        max_connections: int | None = None,
        auto_pipeline: bool | None = None,
        sessions: SessionConfig | bool = True,
        rate_limits: RateLimitConfig | bool | None = None,
        cache: CacheConfig | Sequence[CacheRule] | None = None,
        notifications: Mapping[str, Any] | None = None,
        user_loader: UserLoader | None = None,
        end_streams_on_exit: bool = True,
    ) -> None:
        self._connect_args: dict[str, Any] = {
            "url": url,
            "namespace": namespace,
            "data_dir": data_dir,
            "connect_timeout": connect_timeout,
            "command_timeout": command_timeout,
            "max_connections": max_connections,
            "auto_pipeline": auto_pipeline,
        }
        # The settings are read again at start-up (the environment may change until then);
        # reading them now reports a bad URL, namespace or timeout where the app is written.
        self.namespace = connect_settings(**self._connect_args).namespace
        if sessions is True:
            sessions = SessionConfig()
        if sessions is not False and not isinstance(sessions, SessionConfig):
            raise ConfigurationError("sessions must be a SessionConfig, True or False")
        self.session_config: SessionConfig | None = sessions or None
        if rate_limits is True:
            rate_limits = RateLimitConfig()
        if rate_limits not in (None, False) and not isinstance(rate_limits, RateLimitConfig):
            raise ConfigurationError("rate_limits must be a RateLimitConfig, True or None")
        self.rate_limit_config: RateLimitConfig | None = rate_limits or None
        if cache is None:
            cache = CacheConfig()
        elif not isinstance(cache, CacheConfig):
            cache = CacheConfig(rules=list(cache))
        self.cache_config: CacheConfig = cache
        self.notification_options: dict[str, Any] = {"history": 100, **(notifications or {})}
        self._user_loader = user_loader
        self.end_streams_on_exit = end_streams_on_exit
        self._runtime: _Runtime | None = None
        self._starting = False
        self._factories: dict[int, Callable[[_Runtime], Any]] = {}
        self._workers: list[tuple[Any, Mapping[str, Callable[..., Any]], int, dict[str, Any]]] = []
        self._apps: list[Starlette] = []
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        state = "running" if self._runtime is not None else "stopped"
        parts = [f"namespace={self.namespace!r}", state]
        if self.session_config:
            parts.append("sessions")
        if self.rate_limit_config:
            parts.append("rate limits")
        if self.cache_config.rules:
            parts.append(f"cache rules={len(self.cache_config.rules)}")
        return f"<RedkitWeb {' '.join(parts)}>"

    # -- wiring ----------------------------------------------------------------------------

    def init_app(self, app: Starlette) -> None:
        """Install into ``app``: the middleware, and the connection around the app's lifespan.

        Call it once, before the app serves. Middleware added to the app afterwards runs
        before redkit's (outside it): add CORS or compression after this call.
        """
        if getattr(app.state, "redkit_web", None) is not None:
            raise ConfigurationError("this app already has a RedkitWeb")
        app.add_middleware(RedkitMiddleware, web=self)
        _answer_rate_limits_flat(app)
        app.state.redkit_web = self
        app.router.lifespan_context = self.lifespan(app.router.lifespan_context)
        self._apps.append(app)

    def lifespan(self, inner: Lifespan | None = None) -> Lifespan:
        """A lifespan that connects, runs ``inner`` (the app's own), then closes.

        :meth:`init_app` uses it; by hand: ``FastAPI(lifespan=web.lifespan(my_lifespan))``
        together with ``app.add_middleware(RedkitMiddleware, web=web)``.
        """

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[Any]:
            async with self.running(app):
                if inner is None:
                    yield None
                else:
                    async with inner(app) as state:
                        yield state

        return lifespan

    @asynccontextmanager
    async def running(self, app: Any = None) -> AsyncIterator[redkit.Redkit]:
        """Connect and build everything, yield the client, then close (the lifespan's core;
        useful on its own in scripts and tests: ``async with web.running() as rk:``)."""
        if self._runtime is not None or self._starting:
            raise ConfigurationError(
                "this RedkitWeb is already running: one app, one lifespan at a time"
            )
        self._starting = True
        try:
            rk = await redkit.connect(**self._connect_args)
        except RedkitError as exc:
            log.error("redkit could not connect, so the app does not start: %s", exc)
            raise
        finally:
            self._starting = False
        for installed in self._apps:
            if installed.middleware_stack is None:
                # What the app's first call does; done here when `running` is used without a
                # lifespan (scripts, tests), so the middleware exists to be started.
                installed.middleware_stack = installed.build_middleware_stack()
        middlewares = [m for installed in self._apps for m in _installed_middleware(installed)]
        runtime: _Runtime | None = None
        try:
            runtime = _Runtime(self, rk)
            for middleware in middlewares:
                # Built now, so that an option only the server can check fails the start-up.
                middleware._started(runtime)
            runtime.start_workers()
            restore_signals = (
                runtime.end_streams_on_exit() if self.end_streams_on_exit else lambda: None
            )
        except BaseException as exc:
            if isinstance(exc, RedkitError):
                log.error("redkit could not start the app: %s", exc)
            for middleware in middlewares:
                middleware._stopped()
            await (runtime.close() if runtime is not None else rk.close())
            raise
        self._runtime = runtime
        self.namespace = rk.namespace
        state = getattr(app, "state", None)
        if state is not None:
            state.redkit = rk
        log.info("redkit connected: %r", rk)
        try:
            yield rk
        finally:
            restore_signals()
            try:
                await runtime.close()
            finally:
                for middleware in middlewares:
                    middleware._stopped()
                self._runtime = None
                if state is not None and getattr(state, "redkit", None) is rk:
                    del state.redkit

    # -- what exists while the app runs ----------------------------------------------------

    def _running(self) -> _Runtime:
        runtime = self._runtime
        if runtime is None:
            raise ConfigurationError(_NOT_STARTED)
        return runtime

    @property
    def started(self) -> bool:
        """True while the app runs (between its start-up and its shutdown)."""
        return self._runtime is not None

    @property
    def rk(self) -> redkit.Redkit:
        """The connected client (while the app runs)."""
        return self._running().rk

    @property
    def sessions(self) -> SessionStore:
        """The session store (while the app runs; ``sessions=False`` has none)."""
        store = self._running().store
        if store is None:
            raise ConfigurationError("sessions are off in this RedkitWeb (sessions=False)")
        return store

    @property
    def cache(self) -> Cache:
        """The application's cache (pages and values; while the app runs)."""
        return self._running().cache

    @property
    def bus(self) -> NotificationBus:
        """The notification bus (while the app runs)."""
        return self._running().bus

    @property
    def policy(self) -> TierPolicy | None:
        """The tier policy of every request, if ``rate_limits`` is on (while the app runs)."""
        return self._running().policy

    # -- users -----------------------------------------------------------------------------

    def user_loader(self, loader: UserLoader) -> UserLoader:
        """Decorator: ``(session) -> user or None`` (sync or async) for ``current_user``."""
        self._user_loader = loader
        return loader

    async def load_user(self, session: Session) -> Any:
        if self._user_loader is None:
            return session.user_id
        user = self._user_loader(session)
        return await user if inspect.isawaitable(user) else user

    # -- made from rk at start-up, declared at import ----------------------------------------

    def _declare(self, factory: Callable[[_Runtime], Any]) -> int:
        key = id(factory)
        self._factories[key] = factory
        runtime = self._runtime
        if runtime is not None:
            runtime.objects[key] = factory(runtime)
        return key

    def rate_limit(
        self,
        limit: int,
        window: float | timedelta,
        algorithm: str = "sliding_window",
        *,
        burst: int | None = None,
        name: str | None = None,
        key: KeyFunc | None = None,
        cost: int = 1,
        legacy_headers: bool | None = None,
        trusted_proxies: Iterable[str] | None = None,
        **options: Any,
    ) -> Callable[[Request, Response], Awaitable[Decision]]:
        """A FastAPI dependency that limits a route: ``dependencies=[Depends(web.rate_limit(
        30, 60))]``. It returns the :class:`~redkit.ratelimit.Decision`.

        The key is the caller: ``user:<id>`` with a live session, else ``ip:<client IP>``
        (``trusted_proxies`` as in ``rate_limits``, by default nobody's ``X-Forwarded-For``
        is believed); ``key=lambda request: ...`` chooses another. Limits with the same
        numbers share their counts unless ``name`` tells them apart (``name="search"``).
        A rejection is a 429 with ``Retry-After`` and the ``RateLimit`` headers.
        """
        from redkit.ratelimit.fastapi import rate_limit as route_limit

        cfg = self.rate_limit_config
        try:
            # The rest is checked by the limiter itself, when the app starts.
            seconds(window, "window")
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise InvalidInput(f"limit must be an int >= 1, got {limit!r}")
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
                raise InvalidInput(f"cost must be an int >= 1, got {cost!r}")
            trusted = TrustedProxies(
                trusted_proxies
                if trusted_proxies is not None
                else (cfg.trusted_proxies if cfg else ())
            )
        except InvalidInput as exc:
            raise ConfigurationError(str(exc)) from None
        legacy = legacy_headers if legacy_headers is not None else bool(cfg and cfg.legacy_headers)

        def caller(request: Request) -> str:
            handle = request.scope.get(SCOPE_KEY)
            if isinstance(handle, RequestSession) and handle.session is not None:
                return f"user:{handle.session.user_id}"
            return "ip:" + client_ip(request.scope, trusted)

        def make(runtime: _Runtime) -> Callable[[Request, Response], Awaitable[Decision]]:
            limiter: RateLimiter = runtime.rk.rate_limiter(
                limit, window, algorithm, burst, name=name, **options
            )
            return route_limit(limiter, key=key or caller, cost=cost, legacy=legacy)

        ident = self._declare(make)

        async def dependency(request: Request, response: Response) -> Decision:
            check: Callable[[Request, Response], Awaitable[Decision]]
            check = self._running().object(ident)
            return await check(request, response)

        return dependency

    def cached(
        self,
        ttl: float | timedelta | None = None,
        tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
        key: str | Callable[..., str] | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
        """``@web.cached(ttl=60, tags=["products"])``: :meth:`Cache.cached
        <redkit.cache.Cache.cached>` on the app's cache, declared at import and bound to the
        cache when the app starts."""

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
            if not inspect.iscoroutinefunction(fn):
                raise ConfigurationError(f"@cached needs an async function; {fn!r} is not")
            ident = self._declare(
                lambda runtime: runtime.cache.cached(ttl, tags, key, **options)(fn)
            )

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                bound: Callable[P, Coroutine[Any, Any, R]] = self._running().object(ident)
                return await bound(*args, **kwargs)

            return wrapper

        return decorate

    def worker(
        self,
        queues: Sequence[str] | str,
        functions: Mapping[str, Callable[..., Any]],
        concurrency: int = 10,
        **options: Any,
    ) -> None:
        """Also run a job worker inside the app while it runs (``rk.worker(...)``: it starts
        after the connection and stops, letting running jobs finish, before it closes).
        For a worker of its own, run ``redkit worker module:functions --queue Q``."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if not isinstance(functions, Mapping) or not functions:
            raise ConfigurationError("functions must be a non-empty mapping of name -> function")
        if self._runtime is not None:
            raise ConfigurationError("declare workers before the app starts")
        self._workers.append((queues, dict(functions), concurrency, dict(options)))

    def notification_routes(
        self,
        *,
        authorize: Authorize,
        authorize_patterns: Authorize | None = None,
        allowed_origins: AllowedOrigins = None,
        path: str = "/events",
        websocket_path: str | None = "/ws",
        heartbeat: float = 15.0,
        retry: float = 3.0,
    ) -> list[BaseRoute]:
        """SSE (``GET path``) and WebSocket routes on ``web.bus``: ``app.router.routes.extend(
        web.notification_routes(authorize=...))``; see :mod:`redkit.notify.web` for what
        ``authorize`` and ``authorize_patterns`` (patterns: none without it) must check, and
        ``allowed_origins`` (the WebSocket: by default only pages of the request's own host).
        """
        from redkit.notify.web import notification_routes

        return notification_routes(
            lambda conn: self.bus,
            authorize=authorize,
            authorize_patterns=authorize_patterns,
            allowed_origins=allowed_origins,
            path=path,
            websocket_path=websocket_path,
            heartbeat=heartbeat,
            retry=retry,
        )


def _answer_rate_limits_flat(app: Starlette) -> None:
    """Register the handler that gives a route limit's 429 (and 400) the middleware's flat
    JSON body (FastAPI's default nests it under ``"detail"``), unless the app has a handler
    of its own for it or for one of its base classes (a custom ``HTTPException`` handler
    wins)."""
    from fastapi.exception_handlers import http_exception_handler as fastapi_default

    from redkit.ratelimit.fastapi import RateLimitError, rate_limit_exception_handler

    for base in RateLimitError.__mro__:
        if base in (Exception, BaseException, object):
            break
        handler = app.exception_handlers.get(base)
        if handler is not None and handler is not fastapi_default:
            return
    # For the base class: the 400 of a refused key is flat too. A handler of the app's own
    # for RateLimitExceeded, registered before or after, still answers the 429s.
    app.add_exception_handler(RateLimitError, rate_limit_exception_handler)


def _installed_middleware(app: Starlette) -> list[RedkitMiddleware]:
    """The RedkitMiddleware instances of a started app's middleware stack."""
    found: list[RedkitMiddleware] = []
    node: Any = app.middleware_stack
    for _ in range(100):  # bounded: a stack is a short chain of `.app` links
        if node is None:
            break
        if isinstance(node, RedkitMiddleware):
            found.append(node)
        node = getattr(node, "app", None)
    return found


def web_of(conn: HTTPConnection) -> RedkitWeb:
    """The :class:`RedkitWeb` that handles this request."""
    web = conn.scope.get(WEB_SCOPE_KEY)
    if not isinstance(web, RedkitWeb):
        web = getattr(conn.app.state, "redkit_web", None) if "app" in conn.scope else None
    if not isinstance(web, RedkitWeb):
        raise RuntimeError("install redkit first: RedkitWeb(app) or web.init_app(app)")
    return web
