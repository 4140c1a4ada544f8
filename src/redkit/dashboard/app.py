"""The dashboard as an ASGI app: mount it on any Starlette/FastAPI app.

::

    from redkit.dashboard import Role, dashboard_app

    def who(request):                       # your auth: a Role, a Viewer or None
        user = request.state.user
        return Role.ADMIN if user.is_admin else None

    app.mount("/redkit", dashboard_app(rk, auth=who))

Pages are rendered on the server; a small script opens one Server-Sent Events stream per
tab (``stream``), on which the app's ticker pushes the fragments that changed. Actions are
``POST actions/<name>`` with a JSON body and the CSRF token in a header; each one is
written to the audit stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from redkit.dashboard import data
from redkit.dashboard.live import Broadcaster, Topic
from redkit.dashboard.security import (
    CSRF_COOKIE,
    CSRF_HEADER,
    DEFAULT_SENSITIVE_FIELDS,
    Auth,
    Masker,
    Role,
    Viewer,
    check_auth,
    csrf_ok,
    new_csrf_token,
    resolve_viewer,
)
from redkit.dashboard.views import View, ViewAction, ViewContext, check_views
from redkit.errors import InvalidInput, RedkitError
from redkit.jobs.presence import list_workers
from redkit.jobs.queue import MAX_JOB_ID_LENGTH, check_name
from redkit.notify.events import check_channel, glob_matches, has_glob

if TYPE_CHECKING:
    from redkit.cache.core import Cache
    from redkit.client import Redkit
    from redkit.notify.bus import NotificationBus
    from redkit.ratelimit.limiter import RateLimiter, RateLimits
    from redkit.sessions.store import SessionStore

__all__ = ["dashboard_app"]

AUDIT_MAXLEN = 10_000
MAX_BODY = 64 * 1024
NAV = (
    ("overview", "", "Overview"),
    ("jobs", "jobs", "Jobs"),
    ("locks", "locks", "Locks"),
    ("notifications", "notifications", "Notifications"),
    ("sessions", "sessions", "Sessions"),
    ("cache", "cache", "Cache"),
    ("limits", "limits", "Rate limits"),
    ("audit", "audit", "Audit log"),
)


def _sparkline(
    values: list[float], width: int = 160, height: int = 32, css: str = "spark"
) -> Markup:
    """An inline SVG polyline (no chart library): the series scaled to the box."""
    css = "spark bad-line" if css == "spark bad-line" else "spark"  # a fixed set: no escaping
    if len(values) < 2:
        return Markup(  # noqa: S704 (only numbers are formatted in)
            f'<svg class="{css}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="collecting data"><text x="4" y="{height - 10}">collecting…</text></svg>'
        )
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    label = f"last {len(values)} samples, latest {values[-1]:g}, peak {top:g}"
    return Markup(  # noqa: S704 (only numbers are formatted in)
        f'<svg class="{css}" viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="{label}"><polyline points="{points}"/></svg>'
    )


def _when(ts: float | None) -> Markup:
    """A <time> the script shows in the browser's zone (UTC until then)."""
    if ts is None:
        return Markup("—")
    iso = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    return Markup('<time datetime="{0}">{1}</time>').format(iso, iso.replace("+00:00", "Z"))


def _duration(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172_800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


class _Dashboard:
    def __init__(
        self,
        rk: Redkit,
        auth: Auth,
        read_only: bool,
        masker: Masker,
        interval: float,
        bus: NotificationBus | None,
        caches: Mapping[str, Cache],
        limiters: Mapping[str, RateLimiter | RateLimits],
        sessions: SessionStore | None,
        title: str,
        views: tuple[View, ...] = (),
    ) -> None:
        self.rk = rk
        self.auth = auth
        self.read_only = read_only
        self.mask = masker
        self.bus = bus if bus is not None else rk.notifications()
        self.caches = dict(caches)
        self.limiters = dict(limiters)
        self.sessions = sessions
        self.title = title
        self.views = views
        self.nav = (*NAV, *((v.key, v.key, v.label) for v in views))
        self.view_actions: dict[str, ViewAction] = {
            f"{v.key}.{name}": handler for v in views for name, handler in v.actions.items()
        }
        self.env = Environment(
            loader=PackageLoader("redkit.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            enable_async=False,
        )
        self.env.globals.update(sparkline=_sparkline, when=_when, duration=_duration)
        self.env.filters["pretty"] = lambda v: data.pretty(v, self.mask)
        self.live = Broadcaster(self.sample, self.render, interval)
        self._events_seen: dict[str, str] = {}
        self._feed_count = 0
        self._feed_task: asyncio.Task[None] | None = None
        self.keepalive = 15.0
        """Seconds between keep-alives of an idle stream; the viewer's access is checked
        again at each one."""

    # -- state read once per tick ------------------------------------------------------------

    async def _job_throughput(self, names: list[str]) -> tuple[int, int]:
        """Completed and failed jobs since the last tick, from the queues' lifecycle streams
        (bounded reads: at most 1000 entries per queue per tick)."""

        async def one(name: str) -> tuple[int, int]:
            key = self.rk.queue(name).events_key
            last = self._events_seen.get(name)
            if last is None:
                tail = await self.rk.redis.xrevrange(key, count=1)
                self._events_seen[name] = data._text(tail[0][0]) if tail else "0-0"
                return 0, 0
            entries = await self.rk.redis.xrange(key, min="(" + last, count=1000)
            if not entries:
                return 0, 0
            self._events_seen[name] = data._text(entries[-1][0])
            done = failed = 0
            for _, fields in entries:
                fields = fields or {}
                kind = fields.get(b"event") or fields.get("event")
                kind = data._text(kind) if kind is not None else ""
                done += kind == "completed"
                failed += kind == "failed"
            return done, failed

        results = await asyncio.gather(*(one(n) for n in names))
        per_s = 1 / self.live.interval
        for name, (done, failed) in zip(names, results, strict=True):
            self.live.history.add(f"queue:{name}:done", done * per_s)
            self.live.history.add(f"queue:{name}:failed", failed * per_s)
        return sum(r[0] for r in results), sum(r[1] for r in results)

    async def sample(self, kinds: set[Any], record: bool = True) -> dict[str, Any]:
        """The state the open views (``kinds``) need: one read of every queue, and of the
        locks, caches and workers where a view shows them, sent together. ``record``: the
        ticker's call, which also measures rates and extends the sparklines; a page rendered
        while no ticker runs reads without either."""
        previous = self.live.last_sample

        async def when_shown(
            views: set[str], read: Callable[[], Awaitable[Any]], name: str, empty: Any
        ) -> Any:
            return await read() if kinds & views else previous.get(name, empty)

        # The lock listing walks the namespace (SCAN, locks/admin.py), the top limited keys
        # and the tag counts are one read per limiter/shard: only for their views.
        queues, held, caches, workers, top_limited, tags = await asyncio.gather(
            data.all_queues(self.rk),
            when_shown({"overview", "locks"}, lambda: data.locks(self.rk), "locks", []),
            when_shown({"overview", "caches"}, lambda: data.cache_stats(self.caches), "caches", {}),
            when_shown({"overview", "queues"}, lambda: list_workers(self.rk), "workers", []),
            when_shown({"limits"}, lambda: data.top_limited(self.limiters), "top_limited", {}),
            when_shown({"caches"}, lambda: data.tag_counts(self.caches), "tags", {}),
        )
        limits = data.rate_limit_decisions()
        limited = sum(v.get("limited", 0) for v in limits.values())
        allowed = sum(v.get("allowed", 0) for v in limits.values())
        totals = {
            state: sum(q.counts.get(state, 0) for q in queues)
            for state in ("waiting", "delayed", "active", "completed", "failed")
        }
        per_s = 1 / self.live.interval  # figures per tick, shown per second
        done = events = 0.0
        if record:
            self._ensure_feed_counter()
            done_n, failed_n = await self._job_throughput([q.name for q in queues])
            done, failed = done_n * per_s, failed_n * per_s
            events, self._feed_count = self._feed_count * per_s, 0
            h = self.live.history
            h.add("jobs:done", done)
            h.add("jobs:failed", failed)
            h.add("jobs:waiting", totals["waiting"])
            h.add("locks:held", len(held))
            h.add("notify:events", events)
            for name, stats in caches.items():
                h.add(f"cache:{name}", stats["ratio"] * 100)
            prev = previous.get("limit_totals", (allowed, limited))
            h.add("limits:limited", (limited - prev[1]) * per_s)
            h.add("limits:allowed", (allowed - prev[0]) * per_s)
        else:
            done, events = previous.get("done_rate", 0.0), previous.get("events", 0.0)
        return {
            "queues": queues,
            "totals": totals,
            "locks": held,
            "caches": caches,
            "limits": limits,
            "top_limited": top_limited,
            "tags": tags,
            "limit_totals": (allowed, limited),
            "events": events,
            "done_rate": done,
            "workers": workers,
            "subscribers": self.bus._hub.subscriber_count(),
            "at": time.time(),
        }

    def _ensure_feed_counter(self) -> None:
        """Counts every event published in the namespace (one pattern subscription on the
        process's shared hub) for the overview's notification figures."""
        if self._feed_task is None or self._feed_task.done():
            self._feed_task = asyncio.get_running_loop().create_task(self._count_feed())

    async def _count_feed(self) -> None:
        with contextlib.suppress(RedkitError):
            async with self.bus.subscribe(patterns=["*"]) as sub:
                while self.live.streams:
                    event = await sub.get(timeout=1.0)
                    if event is not None and not event.is_gap:
                        self._feed_count += 1

    # -- rendering ---------------------------------------------------------------------------

    def template(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)

    async def render(self, topic: Topic, role: Role, sample: dict[str, Any]) -> str:
        kind = topic[0]
        admin = role is Role.ADMIN
        if kind == "overview":
            return self.template(
                "_overview.html", s=sample, h=self.live.history, admin=admin, base=str(topic[1])
            )
        if kind == "queues":
            return self.template(
                "_queues.html",
                h=self.live.history,
                queues=sample["queues"],
                workers=sample["workers"],
                admin=admin,
                base=topic[1],
            )
        if kind == "caches":
            return self.template("_caches.html", s=sample, h=self.live.history, admin=admin)
        if kind == "limits":
            return self.template(
                "_limits.html", s=sample, h=self.live.history, limiters=self.limiters, admin=admin
            )
        if kind == "locks":
            return self.template("_locks.html", locks=sample["locks"], admin=admin)
        if kind == "audit":
            return self.template("_audit.html", entries=await data.audit_entries(self.rk))
        if kind == "list":
            _, base, queue, state, page = topic
            jobs, total = await data.job_page(self.rk, str(queue), str(state), int(str(page)))
            return self.template(
                "_jobs.html",
                jobs=jobs,
                total=total,
                queue=queue,
                state=state,
                page=page,
                pages=max(1, math.ceil(total / data.PAGE_SIZE)),
                admin=admin,
                base=base,
                mask=self.mask,
            )
        if kind == "job":
            _, base, queue, job_id = topic
            job = await self.rk.queue(str(queue)).get(str(job_id))
            events = await data.job_events(self.rk, str(queue), str(job_id)) if job else []
            return self.template(
                "_job.html", job=job, events=events, queue=queue, admin=admin, base=base
            )
        raise InvalidInput(f"unknown view {kind!r}")

    # -- requests ----------------------------------------------------------------------------

    async def viewer(self, request: Request) -> Viewer | None:
        return await resolve_viewer(self.auth, request, self.read_only)

    async def still(self, request: Request, viewer: Viewer) -> bool:
        """Whether an open stream's viewer still has its access (asked again at each
        keep-alive, so a revoked admin's tab stops receiving within ``keepalive`` seconds)."""
        try:
            now = await self.viewer(request)
        except RedkitError:
            return True  # Redis hiccup in the auth callback: keep the stream, ask next time
        return now is not None and now.role is viewer.role

    def base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def page(
        self,
        request: Request,
        name: str,
        active: str,
        live: dict[str, Topic],
        *,
        viewer: Viewer | None = None,
        **ctx: Any,
    ) -> Response:
        # A handler that had to know the viewer first passes it: the auth callback (often a
        # session read, a round trip) then runs once per page, not twice.
        if viewer is None:
            viewer = await self.viewer(request)
        if viewer is None:
            return _refused(request)
        token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        base = self.base(request)
        sample = self.live.last_sample
        kinds = {topic[0] for topic in live.values()}
        if kinds & _SAMPLED and (
            not sample or time.time() - sample["at"] > 2 * self.live.interval + 1
        ):
            sample = await self.sample(kinds, record=False)
        fragments = {
            key: Markup(await self.render(topic, viewer.role, sample))  # noqa: S704 (our own escaped output)
            for key, topic in live.items()
        }
        query = [("view", key) for key in live]
        for topic in live.values():
            if topic[0] == "list":
                query += [
                    ("queue", str(topic[2])),
                    ("state", str(topic[3])),
                    ("page", str(topic[4])),
                ]
            if topic[0] == "job":
                query += [("queue", str(topic[2])), ("job", str(topic[3]))]
        body = self.template(
            name,
            title=self.title,
            nav=self.nav,
            active=active,
            base=base,
            viewer=viewer,
            admin=viewer.role is Role.ADMIN,
            csrf=token,
            fragments=fragments,
            stream_query=orjson.dumps(query).decode(),
            **ctx,
        )
        response = HTMLResponse(body, headers=_SECURITY_HEADERS)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path=base or "/",
            )
        return response

    async def overview(self, request: Request) -> Response:
        base = self.base(request)
        return await self.page(
            request, "overview.html", "overview", {"overview": ("overview", base)}
        )

    async def jobs(self, request: Request) -> Response:
        base = self.base(request)
        return await self.page(request, "jobs.html", "jobs", {"queues": ("queues", base)})

    async def known_queue(self, name: str) -> str:
        check_name(name, "queue name")
        if name not in await data.queue_names(self.rk):
            raise HTTPException(404, f"no queue {name!r} in this namespace")
        return name

    async def queue(self, request: Request) -> Response:
        name = await self.known_queue(request.path_params["queue"])
        state = data.check_state(request.query_params.get("state", "waiting"))
        page = data.check_page(request.query_params.get("page", "1"))
        base = self.base(request)
        topic: Topic = ("list", base, name, state, page)
        return await self.page(
            request,
            "queue.html",
            "jobs",
            {"list": topic},
            queue=name,
            state=state,
            states=data.LIST_STATES,
        )

    async def job(self, request: Request) -> Response:
        name = await self.known_queue(request.path_params["queue"])
        job_id = check_name(request.path_params["job"], "job id", MAX_JOB_ID_LENGTH)
        base = self.base(request)
        return await self.page(
            request,
            "job.html",
            "jobs",
            {"job": ("job", base, name, job_id)},
            queue=name,
            job_id=job_id,
        )

    async def search(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return _refused(request)
        query = request.query_params.get("q", "").strip()
        wanted = request.query_params.get("queue", "")
        names = await data.queue_names(self.rk)
        if wanted:
            names = [await self.known_queue(wanted)]
        results: list[Any] = []
        looked = 0
        if query:
            found = await asyncio.gather(
                *(self.rk.queue(n).search_failed(query, limit=50) for n in names)
            )
            for jobs, seen in found:
                results.extend(jobs)
                looked += seen
            results.sort(key=lambda j: j.finished_at or 0, reverse=True)
        return await self.page(
            request,
            "search.html",
            "jobs",
            {},
            viewer=viewer,
            q=query,
            queue=wanted,
            queue_names=names if not wanted else [wanted],
            results=results[:100],
            looked=looked,
            mask=self.mask,
        )

    async def locks(self, request: Request) -> Response:
        return await self.page(request, "locks.html", "locks", {"locks": ("locks",)})

    async def cache_page(self, request: Request) -> Response:
        return await self.page(request, "cache.html", "cache", {"caches": ("caches",)})

    async def limits_page(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return _refused(request)
        key = request.query_params.get("key", "").strip()
        peeked: list[dict[str, Any]] = []
        if key:
            for name, limiter in self.limiters.items():
                d = await limiter.peek(key)
                peeked.append(
                    {
                        "limiter": name,
                        "allowed": d.allowed,
                        "limit": d.limit,
                        "remaining": d.remaining,
                        "reset_after": d.reset_after,
                    }
                )
        return await self.page(
            request,
            "limits.html",
            "limits",
            {"limits": ("limits",)},
            viewer=viewer,
            key=key,
            peeked=peeked,
        )

    async def sessions_page(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return _refused(request)
        user = request.query_params.get("user", "").strip()
        found: list[Any] = []
        activity: list[Any] = []
        if self.sessions is not None:
            store = self.sessions
            # One script each (every process's notes, in per-minute HyperLogLogs), sent
            # together by the automatic pipeline with the user's list.
            counted = asyncio.gather(*(store.activity(m) for m in data.SESSION_WINDOWS))
            if user:
                activity, found = await asyncio.gather(counted, store.list(user))
            else:
                activity = await counted
        return await self.page(
            request,
            "sessions.html",
            "sessions",
            {},
            viewer=viewer,
            user=user,
            found=found,
            activity=activity,
            configured=self.sessions is not None,
        )

    def view_page(self, view: View) -> Callable[[Request], Awaitable[Response]]:
        """The page of an application's :class:`View`, inside the layout."""

        async def endpoint(request: Request) -> Response:
            viewer = await self.viewer(request)
            if viewer is None:
                return _refused(request)
            ctx = ViewContext(request, viewer, viewer.role is Role.ADMIN, self.base(request))
            body = Markup(await view.render(ctx))  # noqa: S704 (the view escapes what it writes)
            return await self.page(
                request, "view.html", view.key, {}, viewer=viewer, label=view.label, body=body
            )

        return endpoint

    async def audit(self, request: Request) -> Response:
        return await self.page(request, "audit.html", "audit", {"audit": ("audit",)})

    async def notifications(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return _refused(request)
        channel = request.query_params.get("channel", "").strip()
        history: list[dict[str, Any]] = []
        if channel:
            check_channel(channel)
            if has_glob(channel):
                raise InvalidInput("history is per channel: name one channel, not a pattern")
            events = await self.bus.history(channel, count=50)
            history = [
                {"id": e.id, "time": e.time, "data": data.pretty(e.data, self.mask)}
                for e in reversed(events)
            ]
        return await self.page(
            request,
            "notifications.html",
            "notifications",
            {},
            viewer=viewer,
            channel=channel,
            history=history,
            no_patterns=self.bus.sharded and not self.bus.cluster_patterns,
        )

    async def stream(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return _refused(request)
        params = request.query_params
        base = self.base(request)
        topics: dict[str, Topic] = {}
        for key in params.getlist("view")[:4]:
            if key in ("overview", "queues"):
                topics[key] = (key, base)
            elif key in ("locks", "audit", "caches", "limits"):
                topics[key] = (key,)
            elif key == "list":
                name = await self.known_queue(params.get("queue", ""))
                state = data.check_state(params.get("state", "waiting"))
                topics[key] = ("list", base, name, state, data.check_page(params.get("page", "1")))
            elif key == "job":
                name = await self.known_queue(params.get("queue", ""))
                job_id = check_name(params.get("job", ""), "job id", MAX_JOB_ID_LENGTH)
                topics[key] = ("job", base, name, job_id)
            else:
                raise InvalidInput(f"unknown view {key!r}")
        try:
            live = self.live.open(topics, viewer.role)
        except RedkitError as exc:
            raise HTTPException(503, str(exc)) from None

        async def frames() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n\n"
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.keepalive):
                            await live.wake.wait()
                    changed = live.take()
                    if not changed:
                        if not await self.still(request, viewer):
                            return
                        yield b": keep-alive\n\n"
                        continue
                    for key, html in changed.items():
                        body = orjson.dumps({"view": key, "html": html})
                        yield b"event: fragment\ndata: " + body + b"\n\n"
            finally:
                self.live.close(live)

        return _sse(frames())

    async def feed(self, request: Request) -> Response:
        """Live events of the namespace (masked), filtered by channel and pattern."""
        viewer = await self.viewer(request)
        if viewer is None:
            return _refused(request)
        wanted = request.query_params.get("filter", "").strip() or "*"
        check_channel(wanted, "filter")
        sub = self.bus.subscribe(patterns=["*"])

        async def frames() -> AsyncIterator[bytes]:
            async with sub:
                # Sent once the subscription is live: from then on nothing published is missed.
                yield b"retry: 2000\nevent: ready\ndata: {}\n\n"
                while True:
                    event = await sub.get(timeout=self.keepalive)
                    if event is None:
                        if not await self.still(request, viewer):
                            return
                        yield b": keep-alive\n\n"
                        continue
                    if event.is_gap or not glob_matches(wanted, event.channel):
                        continue
                    body = orjson.dumps(
                        {
                            "id": event.id,
                            "channel": event.channel,
                            "time": event.time,
                            "data": self.mask(event.data),
                        }
                    )
                    yield b"event: notification\ndata: " + body + b"\n\n"

        return _sse(frames())

    # -- actions -----------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        viewer = await self.viewer(request)
        if viewer is None:
            return JSONResponse({"error": "not allowed: no dashboard access"}, 403)
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
            # A browser says where a request comes from: another site's page cannot act,
            # even with a token (belt and braces over the double-submit check).
            return JSONResponse({"error": "cross-origin action refused"}, 403)
        if not csrf_ok(request, request.headers.get(CSRF_HEADER)):
            return JSONResponse(
                {"error": "missing or wrong CSRF token: reload the page and try again"}, 403
            )
        if viewer.role is not Role.ADMIN:
            return JSONResponse({"error": "read-only access: this role cannot act"}, 403)
        name = request.path_params["name"]
        handler = self.actions.get(name)
        extra = self.view_actions.get(name)
        if handler is None and extra is None:
            return JSONResponse({"error": f"unknown action {name!r}"}, 404)
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse({"error": "request body too large"}, 413)
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            return JSONResponse({"error": "the body must be a JSON object"}, 400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, 400)
        target = ""
        try:
            if handler is not None:
                target, message = await handler(body)
            else:
                assert extra is not None
                target, message = await extra(body, viewer)
        except (InvalidInput, HTTPException) as exc:
            status = exc.status_code if isinstance(exc, HTTPException) else 400
            text = exc.detail if isinstance(exc, HTTPException) else str(exc)
            await self.record(viewer, name, target or _target_of(body), f"refused: {text}")
            return JSONResponse({"error": text}, status)
        await self.record(viewer, name, target, message)
        return JSONResponse({"ok": True, "message": message})

    async def record(self, viewer: Viewer, action: str, target: str, result: str) -> None:
        """One audit entry (who, what, when: the entry id is the server's time). Bounded:
        XADD MAXLEN ~ AUDIT_MAXLEN."""
        await self.rk.redis.xadd(
            data.audit_key(self.rk),
            {
                "who": viewer.name[:200],
                "role": viewer.role.value,
                "action": action,
                "target": target[:300],
                "result": result[:300],
            },
            maxlen=AUDIT_MAXLEN,
            approximate=True,
        )

    async def _queue_of(self, body: dict[str, Any]) -> str:
        name = body.get("queue")
        if not isinstance(name, str):
            raise InvalidInput("name the queue (a string)")
        return await self.known_queue(name)

    def _job_of(self, body: dict[str, Any]) -> str:
        return check_name(body.get("job"), "job id", MAX_JOB_ID_LENGTH)

    async def _retry(self, body: dict[str, Any]) -> tuple[str, str]:
        queue, job = await self._queue_of(body), self._job_of(body)
        moved = await self.rk.queue(queue).retry(job)
        return f"{queue}/{job}", "queued again" if moved else "not failed: left as it is"

    async def _cancel(self, body: dict[str, Any]) -> tuple[str, str]:
        queue, job = await self._queue_of(body), self._job_of(body)
        before = await self.rk.queue(queue).cancel(job)
        if before is None:
            raise HTTPException(404, f"no job {job} on {queue!r}")
        if before.value == "active":
            return f"{queue}/{job}", "cancel requested: its worker stops it at its next heartbeat"
        if before.value in ("waiting", "delayed", "retrying"):
            return f"{queue}/{job}", "cancelled"
        return f"{queue}/{job}", f"already {before.value}: left as it is"

    async def _delete(self, body: dict[str, Any]) -> tuple[str, str]:
        queue, job = await self._queue_of(body), self._job_of(body)
        before = await self.rk.queue(queue).delete(job)
        if before is None:
            raise HTTPException(404, f"no job {job} on {queue!r}")
        if before.value == "active":
            raise HTTPException(409, "the job is running: cancel it first, then delete it")
        return f"{queue}/{job}", "deleted"

    async def _retry_failed(self, body: dict[str, Any]) -> tuple[str, str]:
        queue = await self._queue_of(body)
        n = await self.rk.queue(queue).retry_all_failed()
        return queue, f"{n} failed job(s) queued again"

    async def _pause(self, body: dict[str, Any]) -> tuple[str, str]:
        queue = await self._queue_of(body)
        changed = await self.rk.queue(queue).pause()
        return queue, "paused" if changed else "was already paused"

    async def _resume(self, body: dict[str, Any]) -> tuple[str, str]:
        queue = await self._queue_of(body)
        changed = await self.rk.queue(queue).resume()
        return queue, "resumed" if changed else "was not paused"

    async def _release(self, body: dict[str, Any]) -> tuple[str, str]:
        from redkit.locks.admin import force_release

        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidInput("name the lock to release")
        freed = await force_release(self.rk, name)
        return name, "released" if freed else "was not held"

    async def _publish(self, body: dict[str, Any]) -> tuple[str, str]:
        channel = check_channel(body.get("channel"))
        if has_glob(channel):
            raise InvalidInput("publish to one channel, not a pattern")
        text = body.get("data", "")
        if not isinstance(text, str):
            raise InvalidInput("data must be JSON text")
        try:
            payload = orjson.loads(text) if text.strip() else {"test": True}
        except orjson.JSONDecodeError:
            raise InvalidInput('data is not valid JSON (try {"hello": "world"})') from None
        event_id = await self.bus.publish(channel, payload)
        return channel, f"published event {event_id}"

    async def _invalidate(self, body: dict[str, Any]) -> tuple[str, str]:
        name, tag = body.get("cache"), body.get("tag")
        if not isinstance(name, str) or name not in self.caches:
            raise HTTPException(404, f"no cache {name!r} is shown in this dashboard")
        if not isinstance(tag, str) or not tag.strip():
            raise InvalidInput("name the tag to invalidate")
        n = await self.caches[name].invalidate(tag.strip())
        return f"{name}/{tag.strip()}", f"{n} entr{'y' if n == 1 else 'ies'} invalidated"

    async def _reset_limit(self, body: dict[str, Any]) -> tuple[str, str]:
        name, key = body.get("limiter"), body.get("key")
        if not isinstance(name, str) or name not in self.limiters:
            raise HTTPException(404, f"no rate limiter {name!r} is shown in this dashboard")
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput("name the key to reset")
        await self.limiters[name].reset(key.strip())
        return f"{name}/{key.strip()}", "reset: the key starts with its full allowance"

    async def _revoke_all(self, body: dict[str, Any]) -> tuple[str, str]:
        if self.sessions is None:
            raise HTTPException(404, "no session store is shown in this dashboard")
        user = body.get("user")
        if not isinstance(user, str) or not user.strip():
            raise InvalidInput("name the user whose sessions to revoke")
        n = await self.sessions.revoke_all(user.strip())
        return user.strip(), f"{n} session(s) revoked"

    @property
    def actions(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[tuple[str, str]]]]:
        return {
            "job.retry": self._retry,
            "job.cancel": self._cancel,
            "job.delete": self._delete,
            "queue.retry_failed": self._retry_failed,
            "queue.pause": self._pause,
            "queue.resume": self._resume,
            "lock.release": self._release,
            "notify.publish": self._publish,
            "cache.invalidate": self._invalidate,
            "limits.reset": self._reset_limit,
            "sessions.revoke_all": self._revoke_all,
        }


_SAMPLED = {"overview", "queues", "locks", "caches", "limits"}
"""The views drawn from the ticker's sample (the others read their own data)."""

_SECURITY_HEADERS = {
    # The page loads only its own script and styles; nothing may frame it.
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _target_of(body: dict[str, Any]) -> str:
    keys = ("queue", "job", "name", "channel", "cache", "tag", "limiter", "key", "user", "session")
    parts = [str(body.get(k)) for k in keys if body.get(k)]
    return "/".join(parts)[:300]


def _sse(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def _refused(request: Request) -> Response:
    if _wants_html(request):
        return HTMLResponse(
            "<!doctype html><title>Not allowed</title><h1>Not allowed</h1>"
            "<p>This account has no access to the redkit dashboard. Sign in as an "
            "administrator.</p>",
            403,
        )
    return JSONResponse({"error": "not allowed: no dashboard access"}, 403)


async def _bad_input(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code)


async def _redis_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"Redis is not answering: {exc}"}, 503)


def dashboard_app(
    rk: Redkit,
    *,
    auth: Auth,
    read_only: bool = False,
    sensitive_fields: Iterable[str] = DEFAULT_SENSITIVE_FIELDS,
    interval: float = 1.0,
    bus: NotificationBus | None = None,
    caches: Mapping[str, Cache] | None = None,
    limiters: Mapping[str, RateLimiter | RateLimits] | None = None,
    sessions: SessionStore | None = None,
    title: str = "redkit",
    views: Iterable[View] | None = None,
) -> Starlette:
    """The live dashboard of ``rk``'s namespace as an ASGI app to mount.

    - ``auth``: required; ``(request) -> Role | Viewer | None``, plain or async. ``None``
      answers 403; ``Role.READ_ONLY`` sees everything and cannot act.
    - ``read_only``: cap every viewer at read-only (a dashboard without actions).
    - ``sensitive_fields``: payload fields whose name contains one of these words are masked
      everywhere (job payloads, results, progress, notification data).
    - ``interval``: seconds between two reads of the state (one reader per app, however
      many dashboards are open).
    - ``bus``: the notification bus whose events the feed shows (default
      ``rk.notifications()``); ``caches``: name -> Cache whose hit ratios to show (and
      whose tags may be invalidated); ``limiters``: name -> RateLimiter whose keys may be
      peeked and reset; ``sessions``: the SessionStore whose users' sessions to list.
    - ``views``: the application's own pages (:class:`redkit.dashboard.View`), each with a
      nav entry, behind the same ``auth``, with actions audited like the built-in ones
      (:mod:`redkit.dashboard.views`).
    """
    checked = check_auth(auth)
    extra_views = check_views(views)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not (0.05 <= interval <= 60)
    ):
        raise InvalidInput(f"interval must be 0.05..60 seconds, got {interval!r}")
    dash = _Dashboard(
        rk,
        checked,
        bool(read_only),
        Masker(sensitive_fields),
        float(interval),
        bus,
        caches or {},
        limiters or {},
        sessions,
        title,
        extra_views,
    )
    routes = [
        Route("/", dash.overview),
        Route("/jobs", dash.jobs),
        Route("/jobs/search", dash.search),
        Route("/jobs/{queue}", dash.queue),
        Route("/jobs/{queue}/job/{job:path}", dash.job),
        Route("/locks", dash.locks),
        Route("/notifications", dash.notifications),
        Route("/sessions", dash.sessions_page),
        Route("/cache", dash.cache_page),
        Route("/limits", dash.limits_page),
        Route("/audit", dash.audit),
        Route("/stream", dash.stream),
        Route("/feed", dash.feed),
        Route("/actions/{name}", dash.action, methods=["POST"]),
        *(Route(f"/{view.key}", dash.view_page(view)) for view in extra_views),
        Mount("/static", StaticFiles(packages=[("redkit.dashboard", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            InvalidInput: _bad_input,
            HTTPException: _http_error,
            RedkitError: _redis_error,
        },
    )
    app.state.dashboard = dash
    return app
