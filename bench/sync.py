"""The sync API (``redkit.sync`` and the Flask and Django integrations) against the sync peers.

Every side is plain blocking code run in a thread (``asyncio.to_thread``, one hop per run,
not per operation), against the same server, runs interleaved by the harness. Each figure
compares what a Flask or Django user would swap, at the level they would swap it:

- **session read (Django)**: ``SessionStore(key).load()`` of ``redkit.django.sessions``
  against Django's cache-backed sessions on django-redis. One round trip each.
- **session read (Flask)**: the session interface's ``open_session`` and a read of the
  session (redkit's is loaded on first access) against Flask-Session's Redis sessions. One
  round trip each.
- **cache get (Django)**: ``caches[...].get(key)`` of ``redkit.django.RedkitCache`` against
  django-redis. One round trip each.
- **rate-limit check (Flask-Limiter, fixed window / moving window)**: the ``limits``
  strategy that Flask-Limiter calls, on redkit's ``redkit://`` storage against limits' own
  sync ``redis://`` storage. One round trip each.
- **rate-limit check (Django view)**: a view under ``redkit.django.ratelimit.ratelimit``
  (``fixed_window``) against the same view under django-ratelimit on django-redis, which
  spends two round trips per allowed request (``add`` then ``incr``).
- **lock acquire+release**: ``rk.lock(...)`` of ``redkit.sync`` (watchdog on, the default)
  against redis-py's sync ``Lock``. Two round trips each.
- **enqueue**: ``Queue.enqueue`` of ``redkit.sync`` (one script) against RQ (one
  MULTI/EXEC pipeline), Celery with its Redis broker (an ``SMEMBERS`` of the exchange's
  bindings, then the ``LPUSH``: two round trips) and Huey (one ``LPUSH``).

Flask and Django are redkit extras: without them the section is left out. Peers that are not
installed are skipped (``make bench`` installs them into ``.venv-bench``).
``python -m bench --only sync-api`` runs just this section.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

import redkit.sync
from bench.harness import Comparison, Context, Runner, comparison, verify

SECTION = "sync-api"
BIG = 10**9  # every check is allowed: the hot path of a healthy service
SessionRead = Callable[[], Any]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


HAVE_FRAMEWORKS = _has("django") and _has("flask")


def _name(side: str) -> str:
    # A fresh name per run: no state of an earlier run (or side) can help or hurt.
    return f"bench-sync-{side}-{secrets.token_hex(4)}"


def _rate(n: int, op: Callable[[], object]) -> float:
    began = time.perf_counter()
    for _ in range(n):
        op()
    return n / (time.perf_counter() - began)


def _threaded(fn: Callable[[str, int], float], base: int) -> Runner:
    """A harness side that runs the blocking ``fn(url, n)`` in a thread."""

    async def side(ctx: Context) -> float:
        return await asyncio.to_thread(fn, ctx.url, ctx.n(base))

    return side


def _register(name: str, unit: str, base: int, fn: Callable[[str, int], float]) -> Comparison:
    return comparison(SECTION, name, unit=unit)(_threaded(fn, base))


def _peer(
    comp: Comparison, peer: str, module: str, base: int, fn: Callable[[str, int], float]
) -> None:
    if _has(module):
        comp.peers[peer] = _threaded(fn, base)


_clients: dict[str, redkit.sync.Redkit] = {}
_setup = threading.Lock()


def _rk(url: str) -> redkit.sync.Redkit:
    """One sync Redkit per server for the whole run, as an app keeps one."""
    with _setup:
        rk = _clients.get(url)
        if rk is None:
            rk = _clients[url] = redkit.sync.connect(url, "bench-sync")
        return rk


def _django(url: str) -> None:
    """Configure Django once for this process: both cache backends, both session stores."""
    import django
    from django.conf import settings

    with _setup:
        if settings.configured:
            return
        settings.configure(
            SECRET_KEY="bench-" + secrets.token_hex(16),
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
            ],
            CACHES={
                # Django's cache sessions and django-ratelimit use the default alias.
                "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url},
                "redkit": {
                    "BACKEND": "redkit.django.RedkitCache",
                    "LOCATION": url,
                    "OPTIONS": {"NAMESPACE": "bench-django"},
                },
            },
            REDKIT_SESSIONS={"LOCATION": url, "NAMESPACE": "bench-django"},
            REDKIT_RATELIMIT={"LOCATION": url, "NAMESPACE": "bench-django"},
            USE_TZ=True,
        )
        django.setup()


# -- session read ------------------------------------------------------------------------------


def _django_session_read(engine: str) -> Callable[[str, int], float]:
    def run(url: str, n: int) -> float:
        _django(url)
        store_class: Any = importlib.import_module(engine).SessionStore
        session = store_class()
        session["user"] = "alice"
        session.save()
        key = session.session_key
        found = 0

        def read() -> None:
            nonlocal found
            found += store_class(session_key=key).load().get("user") == "alice"

        rate = _rate(n, read)
        store_class(session_key=key).delete()
        verify(found == n, f"{engine}: {found} of {n} sessions read")
        return rate

    return run


if HAVE_FRAMEWORKS:
    django_sessions = _register(
        "session read (Django SessionStore.load)",
        "reads/s",
        2000,
        _django_session_read("redkit.django.sessions"),
    )
    _peer(
        django_sessions,
        "django cache sessions (django-redis)",
        "django_redis",
        2000,
        _django_session_read("django.contrib.sessions.backends.cache"),
    )


def _flask_session_read(make_app: Callable[[str], Any]) -> Callable[[str, int], float]:
    def run(url: str, n: int) -> float:
        import flask

        app = make_app(url)

        def login() -> str:
            flask.session["user"] = "alice"
            return "ok"

        app.add_url_rule("/login", view_func=login, methods=["POST"])
        client = app.test_client()
        verify(client.post("/login").status_code == 200, "login failed")
        cookie_name = app.session_interface.get_cookie_name(app)
        cookie = client.get_cookie(cookie_name)
        verify(cookie is not None, "no session cookie")
        interface = app.session_interface
        found = 0
        with app.test_request_context("/", headers={"Cookie": f"{cookie_name}={cookie.value}"}):
            request = flask.request._get_current_object()  # type: ignore[attr-defined]

            def read() -> None:
                nonlocal found
                session = interface.open_session(app, request)
                found += session is not None and session.get("user") == "alice"

            rate = _rate(n, read)
        verify(found == n, f"{app.name}: {found} of {n} sessions read")
        return rate

    return run


def _redkit_flask_app(url: str) -> Any:
    import flask

    import redkit.flask

    app = flask.Flask(_name("redkit-flask"))
    app.config.update(SECRET_KEY=secrets.token_hex(16), REDKIT_URL=url, REDKIT_NAMESPACE="bench-fl")
    redkit.flask.Redkit(app)
    return app


def _flask_session_app(url: str) -> Any:
    import flask

    flask_session: Any = importlib.import_module("flask_session")
    app = flask.Flask(_name("flask-session"))
    app.config.update(
        SECRET_KEY=secrets.token_hex(16),
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(url),
        SESSION_KEY_PREFIX=_name("flask-session") + ":",
    )
    flask_session.Session(app)
    return app


if HAVE_FRAMEWORKS:
    flask_sessions = _register(
        "session read (Flask open_session)",
        "reads/s",
        2000,
        _flask_session_read(_redkit_flask_app),
    )
    _peer(
        flask_sessions,
        "Flask-Session (redis)",
        "flask_session",
        2000,
        _flask_session_read(_flask_session_app),
    )


# -- cache get ---------------------------------------------------------------------------------


def _django_cache_get(alias: str) -> Callable[[str, int], float]:
    def run(url: str, n: int) -> float:
        _django(url)
        from django.core.cache import caches

        cache = caches[alias]
        key = _name(alias)
        value = {"user": "alice", "items": [1, 2, 3], "theme": "dark"}
        cache.set(key, value, 300)
        found = 0

        def get() -> None:
            nonlocal found
            found += cache.get(key) == value

        rate = _rate(n, get)
        cache.delete(key)
        verify(found == n, f"{alias}: {found} of {n} gets found the value")
        return rate

    return run


if HAVE_FRAMEWORKS:
    django_cache = _register(
        "cache get (Django cache API)", "gets/s", 3000, _django_cache_get("redkit")
    )
    _peer(django_cache, "django-redis", "django_redis", 3000, _django_cache_get("default"))


# -- rate-limit checks -------------------------------------------------------------------------


def _limits_check(scheme: str, strategy: str) -> Callable[[str, int], float]:
    """Flask-Limiter's call: ``strategy.hit(item, key)`` on the storage for ``scheme``."""

    def run(url: str, n: int) -> float:
        limits: Any = importlib.import_module("limits")
        if scheme == "redkit":
            importlib.import_module("redkit.flask.storage")  # registers redkit://
        storage = limits.storage.storage_from_string(scheme + url[len("redis") :])
        limiter = getattr(limits.strategies, strategy)(storage)
        item = limits.RateLimitItemPerHour(BIG)
        key = _name(scheme)
        allowed = 0

        def hit() -> None:
            nonlocal allowed
            allowed += bool(limiter.hit(item, key))

        rate = _rate(n, hit)
        verify(allowed == n, f"{scheme} {strategy}: {allowed} of {n} checks allowed")
        return rate

    return run


if HAVE_FRAMEWORKS and _has("limits"):
    for _label, _strategy in (
        ("fixed window", "FixedWindowRateLimiter"),
        ("moving window", "MovingWindowRateLimiter"),
    ):
        _comp = _register(
            f"rate-limit check (Flask-Limiter, {_label})",
            "checks/s",
            3000,
            _limits_check("redkit", _strategy),
        )
        _comp.peers["limits (sync redis storage)"] = _threaded(
            _limits_check("redis", _strategy), 3000
        )


def _django_view_check(decorator: Callable[[], Callable[..., Any]]) -> Callable[[str, int], float]:
    def run(url: str, n: int) -> float:
        _django(url)
        from django.http import HttpResponse
        from django.test import RequestFactory

        def view(request: Any) -> HttpResponse:
            return HttpResponse("ok")

        view.__qualname__ = _name("view")  # a group (so a counter) of its own per run
        limited = decorator()(view)
        request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.7")
        allowed = 0

        def check() -> None:
            nonlocal allowed
            allowed += limited(request).status_code == 200

        rate = _rate(n, check)
        verify(allowed == n, f"{allowed} of {n} requests allowed")
        return rate

    return run


def _redkit_decorator() -> Callable[..., Any]:
    from redkit.django.ratelimit import ratelimit

    return ratelimit(key="ip", rate=f"{BIG}/h", algorithm="fixed_window")


def _django_ratelimit_decorator() -> Callable[..., Any]:
    decorators: Any = importlib.import_module("django_ratelimit.decorators")
    return decorators.ratelimit(key="ip", rate=f"{BIG}/h", block=True)  # type: ignore[no-any-return]


if HAVE_FRAMEWORKS:
    django_view = _register(
        "rate-limit check (Django view decorator)",
        "checks/s",
        2000,
        _django_view_check(_redkit_decorator),
    )
    if _has("django_redis"):
        _peer(
            django_view,
            "django-ratelimit (django-redis)",
            "django_ratelimit",
            2000,
            _django_view_check(_django_ratelimit_decorator),
        )


# -- lock pair ---------------------------------------------------------------------------------


def _redkit_lock_pairs(url: str, n: int) -> float:
    rk = _rk(url)
    name = _name("redkit")
    fences: list[int] = []

    def pair() -> None:
        lock = rk.lock(name, ttl=10)
        fences.append(lock.acquire())
        lock.release()

    rate = _rate(n, pair)
    verify(len(fences) == n and fences[-1] - fences[0] == n - 1, "redkit: pairs missing")
    return rate


def _redis_py_lock_pairs(url: str, n: int) -> float:
    client = redis.Redis.from_url(url)
    name = _name("redis-py")
    held = 0

    def pair() -> None:
        nonlocal held
        lock = client.lock(name, timeout=10)
        held += bool(lock.acquire())
        lock.release()

    try:
        rate = _rate(n, pair)
    finally:
        client.close()
    verify(held == n, "redis-py: pairs missing")
    return rate


locks = _register("lock acquire+release", "pairs/s", 2000, _redkit_lock_pairs)
locks.peers["redis-py Lock (sync)"] = _threaded(_redis_py_lock_pairs, 2000)


# -- enqueue -----------------------------------------------------------------------------------


def _redkit_enqueue(url: str, n: int) -> float:
    queue = _rk(url).queue(_name("redkit"))
    queue.enqueue("noop", 0)  # registers the queue name once

    def enqueue() -> None:
        queue.enqueue("noop", 1)

    rate = _rate(n, enqueue)
    verify(queue.stats().waiting == n + 1, "redkit: jobs missing")
    queue.drain()  # the waiting jobs go: nothing is left behind for a worker
    return rate


def _rq_enqueue(url: str, n: int) -> float:
    from bench.jobs import _rq_enqueue as rq_enqueue

    return rq_enqueue(url, n, False)


def _celery_enqueue(url: str, n: int) -> float:
    celery: Any = importlib.import_module("celery")
    queue = _name("celery")
    app = celery.Celery(queue, broker=url)
    app.conf.update(task_default_queue=queue, task_ignore_result=True, broker_pool_limit=1)

    def task(x: int) -> int:
        return x

    noop = app.task(name="bench.noop")(task)
    noop.apply_async((0,))  # connects and declares the queue once
    client = redis.Redis.from_url(url)
    try:
        rate = _rate(n, lambda: noop.apply_async((1,)))
        verify(client.llen(queue) == n + 1, "celery: jobs missing")
        client.delete(queue)
    finally:
        client.close()
        app.close()
    return rate


def _huey_enqueue(url: str, n: int) -> float:
    huey_module: Any = importlib.import_module("huey")
    huey = huey_module.RedisHuey(_name("huey"), url=url, results=False)

    def task(x: int) -> int:
        return x

    noop = huey.task()(task)
    noop(0)
    rate = _rate(n, lambda: noop(1))
    verify(huey.pending_count() == n + 1, "huey: jobs missing")
    huey.flush()
    return rate


enqueue = _register("enqueue (sync caller)", "jobs/s", 2000, _redkit_enqueue)
_peer(enqueue, "RQ", "rq", 2000, _rq_enqueue)
_peer(enqueue, "Celery (redis broker)", "celery", 2000, _celery_enqueue)
_peer(enqueue, "Huey", "huey", 2000, _huey_enqueue)
