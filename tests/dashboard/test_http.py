"""The dashboard over real HTTP (uvicorn + httpx): access, CSRF, actions, audit, masking,
push."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

import redkit
from dashboard.helpers import make_app, serve
from redkit.dashboard import MASK, Role, dashboard_app
from redkit.dashboard.app import AUDIT_MAXLEN
from redkit.dashboard.data import audit_entries
from redkit.errors import ConfigurationError, InvalidInput

PAGES = [
    "/",
    "/jobs",
    "/jobs/mail",
    "/jobs/mail?state=failed",
    "/locks",
    "/notifications",
    "/audit",
]


async def client(url: str, role: str | None) -> httpx.AsyncClient:
    headers = {"accept": "text/html"}
    if role:
        headers["x-role"] = role
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)


async def csrf_of(c: httpx.AsyncClient) -> str:
    page = await c.get("/jobs")
    assert page.status_code == 200
    token = c.cookies.get("redkit_dashboard_csrf")
    assert token
    assert f'name="rk-csrf" content="{token}"' in page.text
    return token


async def act(c: httpx.AsyncClient, name: str, body: dict[str, Any], token: str) -> httpx.Response:
    return await c.post(f"/actions/{name}", json=body, headers={"x-csrf-token": token})


@pytest.fixture
async def url(rk: redkit.Redkit) -> AsyncIterator[str]:
    await rk.queue("mail").enqueue("send", {"to": "a@b.c", "password": "hunter2"})
    async with serve(make_app(rk)) as base:
        yield base


def test_a_dashboard_without_auth_is_refused_at_once(rk: redkit.Redkit) -> None:
    with pytest.raises(ConfigurationError, match="auth="):
        dashboard_app(rk, auth=None)  # type: ignore[arg-type]


async def test_without_a_role_every_page_stream_and_action_answers_403(url: str) -> None:
    async with await client(url, None) as c:
        for path in [*PAGES, "/stream?view=overview", "/feed", "/jobs/search?q=x"]:
            response = await c.get(path)
            assert response.status_code == 403, path
        refused = await c.post("/actions/queue.pause", json={"queue": "mail"})
        assert refused.status_code == 403
        assert refused.json() == {"error": "not allowed: no dashboard access"}


@pytest.mark.cluster
async def test_a_read_only_viewer_sees_every_page_but_cannot_act(
    rk: redkit.Redkit, url: str
) -> None:
    async with await client(url, "ro") as c:
        for path in PAGES:
            page = await c.get(path)
            assert page.status_code == 200, path
            assert "data-action=" not in page.text.replace('form data-action="notify', "")
        token = await csrf_of(c)
        refused = await act(c, "queue.pause", {"queue": "mail"}, token)
        assert refused.status_code == 403
        assert refused.json()["error"] == "read-only access: this role cannot act"
    assert not await rk.queue("mail").is_paused()


async def test_an_action_without_the_csrf_token_of_its_cookie_is_refused(
    rk: redkit.Redkit, url: str
) -> None:
    async with await client(url, "admin") as c:
        token = await csrf_of(c)
        for headers in ({}, {"x-csrf-token": "forged"}, {"x-csrf-token": token + "x"}):
            refused = await c.post("/actions/queue.pause", json={"queue": "mail"}, headers=headers)
            assert refused.status_code == 403
            assert "CSRF" in refused.json()["error"]
        c.cookies.clear()  # a cross-site request carries no cookie (SameSite=Strict)
        refused = await c.post(
            "/actions/queue.pause", json={"queue": "mail"}, headers={"x-csrf-token": token}
        )
        assert refused.status_code == 403
    assert not await rk.queue("mail").is_paused()


async def test_the_csrf_cookie_is_http_only_strict_and_scoped_to_the_mount(url: str) -> None:
    async with await client(url, "admin") as c:
        page = await c.get("/")
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/redkit" in cookie
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_every_action_is_written_to_the_bounded_audit_log_and_shown(
    rk: redkit.Redkit, url: str
) -> None:
    async with await client(url, "admin") as c:
        token = await csrf_of(c)
        done = await act(c, "queue.pause", {"queue": "mail"}, token)
        assert done.json() == {"ok": True, "message": "paused"}
        assert await rk.queue("mail").is_paused()
        refused = await act(c, "job.retry", {"queue": "mail", "job": "nope"}, token)
        assert refused.status_code == 400
        fields = [
            {k: v for k, v in e.items() if k not in ("id", "time")} for e in await audit_entries(rk)
        ]
        assert fields[1] == {
            "who": "alice@example.com",
            "role": "admin",
            "action": "queue.pause",
            "target": "mail",
            "result": "paused",
        }
        assert fields[0]["action"] == "job.retry"
        assert fields[0]["result"].startswith("refused: no job nope")
        page = await c.get("/audit")
        assert "alice@example.com" in page.text
        assert "queue.pause" in page.text
    assert AUDIT_MAXLEN == 10_000  # XADD MAXLEN ~ keeps the log bounded


async def test_sensitive_payload_fields_are_masked_on_every_page(rk: redkit.Redkit) -> None:
    q = rk.queue("pay")
    job = await q.enqueue(
        "charge", {"card_number": "4111", "Authorization": "Bearer x", "nested": [{"api_key": "k"}]}
    )
    app = make_app(rk, sensitive_fields=["card", "authorization", "api_key"])
    async with serve(app) as base, await client(base, "admin") as c:
        detail = await c.get(f"/jobs/pay/job/{job.id}")
        assert detail.status_code == 200
        for secret in ("4111", "Bearer x", '"k"'):
            assert secret not in detail.text
        assert detail.text.count(MASK) == 3


@pytest.mark.cluster
async def test_a_new_job_is_pushed_to_an_open_list_without_a_reload(
    rk: redkit.Redkit, url: str
) -> None:
    async with await client(url, "admin") as c:
        params = {"view": "list", "queue": "mail", "state": "waiting", "page": "1"}
        async with c.stream("GET", "/stream", params=params) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            job = await rk.queue("mail").enqueue("send", {"to": "new@b.c"})
            async with asyncio.timeout(10):
                async for line in lines:
                    if line.startswith("data:") and job.id in line:
                        frame = orjson.loads(line[5:])
                        assert frame["view"] == "list"
                        assert f'data-job="{job.id}"' in frame["html"]
                        break


async def test_many_open_dashboards_share_one_read_per_tick(rk: redkit.Redkit) -> None:
    app = make_app(rk)
    dash = app.routes[0].app.state.dashboard  # type: ignore[attr-defined]
    renders: list[Any] = []
    render = dash.live.render

    async def counted(topic: Any, role: Role, sample: dict[str, Any]) -> str:
        renders.append(topic)
        html: str = await render(topic, role, sample)
        return html

    dash.live.render = counted
    async with (
        serve(app) as base,
        await client(base, "admin") as c,
        c.stream("GET", "/stream?view=queues") as one,
        c.stream("GET", "/stream?view=queues") as two,
        c.stream("GET", "/stream?view=queues") as three,
    ):
        for s in (one, two, three):
            assert s.status_code == 200
        ticks = dash.live.ticks
        for _ in range(500):
            if dash.live.ticks >= ticks + 3 and len(dash.live.streams) == 3:
                break
            await asyncio.sleep(0.02)
        renders.clear()
        before = dash.live.ticks
        for _ in range(500):
            if dash.live.ticks >= before + 2:
                break
            await asyncio.sleep(0.02)
        done = dash.live.ticks - before
        # One render of the view per tick, whatever the number of streams showing it.
        assert len(renders) <= done + 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/jobs/mail?state=bogus", 400),
        ("/jobs/mail?page=0", 400),
        ("/jobs/mail?page=x", 400),
        ("/jobs/nosuchqueue", 404),
        ("/stream?view=bogus", 400),
        ("/stream?view=list&queue=nosuchqueue", 404),
        ("/notifications?channel=a*", 400),
        ("/feed?filter=" + "x" * 5000, 400),
    ],
)
async def test_bad_input_is_a_4xx_with_a_json_body(url: str, path: str, status: int) -> None:
    async with await client(url, "admin") as c:
        response = await c.get(path)
        assert response.status_code == status
        assert response.json()["error"]


async def test_bad_action_bodies_are_4xx_json_and_change_nothing(
    rk: redkit.Redkit, url: str
) -> None:
    async with await client(url, "admin") as c:
        token = await csrf_of(c)
        headers = {"x-csrf-token": token, "content-type": "application/json"}
        for body, status in ((b"{", 400), (b"[1]", 400), (b'{"queue": 5}', 400)):
            bad = await c.post("/actions/queue.pause", content=body, headers=headers)
            assert bad.status_code == status
            assert bad.json()["error"]
        unknown = await act(c, "queue.explode", {"queue": "mail"}, token)
        assert unknown.status_code == 404
        missing = await act(c, "queue.pause", {"queue": "other"}, token)
        assert missing.status_code == 404
    assert not await rk.queue("mail").is_paused()


@pytest.mark.cluster
async def test_job_actions_retry_cancel_delete_and_publish(rk: redkit.Redkit, url: str) -> None:
    q = rk.queue("mail")
    job = await q.enqueue("send", {"to": "x@y.z"}, delay=60)
    bus = rk.notifications()
    async with await client(url, "admin") as c:
        token = await csrf_of(c)
        cancelled = await act(c, "job.cancel", {"queue": "mail", "job": job.id}, token)
        assert cancelled.json()["message"] == "cancelled"
        retried = await act(c, "job.retry", {"queue": "mail", "job": job.id}, token)
        assert retried.json()["message"] == "queued again"
        assert (await job.status()).value == "waiting"
        deleted = await act(c, "job.delete", {"queue": "mail", "job": job.id}, token)
        assert deleted.json()["message"] == "deleted"
        assert await q.get(job.id) is None
        published = await act(
            c, "notify.publish", {"channel": "dash:test", "data": '{"a": 1}'}, token
        )
        assert published.status_code == 200
        bad_json = await act(c, "notify.publish", {"channel": "dash:test", "data": "{"}, token)
        assert bad_json.status_code == 400
    assert [e.data for e in await bus.history("dash:test")] == [{"a": 1}]


async def test_the_jobs_page_lists_the_workers_alive_with_their_load(
    rk: redkit.Redkit, url: str
) -> None:
    async def noop(payload: Any) -> None:
        return None

    worker = rk.worker(["mail"], {"send": noop}, concurrency=4, handle_signals=False)
    task = asyncio.create_task(worker.run())
    try:
        async with await client(url, "admin") as c:
            for _ in range(500):
                page = await c.get("/jobs")
                if f'data-worker="{worker.id}"' in page.text:
                    break
                await asyncio.sleep(0.02)
            assert f'data-worker="{worker.id}"' in page.text
            assert "0 / 4" in page.text
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


@pytest.mark.cluster
async def test_cache_rate_limit_and_session_actions(rk: redkit.Redkit) -> None:
    cache = rk.cache()
    await cache.set("profile:42", {"name": "Ada"}, tags=["user:42"])
    limiter = rk.rate_limiter(limit=2, window=60, name="api")
    await limiter.hit("ip:1")
    await limiter.hit("ip:1")
    store = rk.sessions(idle_ttl=600, absolute_ttl=3600)
    await store.create("u42", {"cart": 1}, ip="203.0.113.7")
    await store.create("u42", {})
    app = make_app(rk, caches={"pages": cache}, limiters={"api": limiter}, sessions=store)
    async with serve(app) as base, await client(base, "admin") as c:
        token = await csrf_of(c)
        page = await c.get("/limits", params={"key": "ip:1"})
        assert "limited" in page.text
        assert "0 of 2" in page.text
        sessions = await c.get("/sessions", params={"user": "u42"})
        assert sessions.text.count("data-session=") == 2
        assert "203.0.113.7" in sessions.text
        for minutes in (5, 60):
            assert f'data-figure="sessions-active-{minutes}">2<' in sessions.text
            assert f'data-figure="sessions-created-{minutes}">2<' in sessions.text
        for name, body, message in (
            ("cache.invalidate", {"cache": "pages", "tag": "user:42"}, "1 entry invalidated"),
            ("limits.reset", {"limiter": "api", "key": "ip:1"}, "reset"),
            ("sessions.revoke_all", {"user": "u42"}, "2 session(s) revoked"),
        ):
            reply = await act(c, name, body, token)
            assert reply.status_code == 200, reply.text
            assert reply.json()["message"].startswith(message)
        unknown = await act(c, "cache.invalidate", {"cache": "other", "tag": "x"}, token)
        assert unknown.status_code == 404
    assert await cache.get("profile:42") is None
    assert (await limiter.peek("ip:1")).remaining == 2
    assert await store.list("u42") == []


async def test_an_action_from_another_origin_is_refused_even_with_the_token(
    rk: redkit.Redkit, url: str
) -> None:
    async with await client(url, "admin") as c:
        token = await csrf_of(c)
        refused = await c.post(
            "/actions/queue.pause",
            json={"queue": "mail"},
            headers={"x-csrf-token": token, "origin": "https://evil.example"},
        )
        assert refused.status_code == 403
        assert refused.json() == {"error": "cross-origin action refused"}
        same = await c.post(
            "/actions/queue.pause",
            json={"queue": "mail"},
            headers={"x-csrf-token": token, "origin": url.removesuffix("/redkit")},
        )
        assert same.status_code == 200
    assert await rk.queue("mail").is_paused()


async def test_read_only_true_caps_even_an_admin(rk: redkit.Redkit) -> None:
    await rk.queue("mail").enqueue("send")
    async with serve(make_app(rk, read_only=True)) as base, await client(base, "admin") as c:
        token = await csrf_of(c)
        page = await c.get("/jobs")
        assert "data-action=" not in page.text
        refused = await act(c, "queue.pause", {"queue": "mail"}, token)
        assert refused.status_code == 403
    assert not await rk.queue("mail").is_paused()


def test_bad_options_are_refused_at_once(rk: redkit.Redkit) -> None:
    with pytest.raises(ConfigurationError, match="list of names"):
        dashboard_app(rk, auth=lambda r: Role.ADMIN, sensitive_fields="password")
    with pytest.raises(InvalidInput, match="interval"):
        dashboard_app(rk, auth=lambda r: Role.ADMIN, interval=0)


async def test_an_auth_callback_answering_nonsense_lets_nobody_in(rk: redkit.Redkit) -> None:
    async with serve(make_app(rk, auth=lambda r: "admin")) as base, await client(base, None) as c:
        refused = await c.get("/jobs")
        assert refused.status_code == 400
        assert "return a Role, a Viewer or None" in refused.json()["error"]


async def test_every_page_asks_the_auth_callback_once(rk: redkit.Redkit) -> None:
    asked: list[str] = []

    def counting(conn: Any) -> Role:
        asked.append(conn.url.path)
        return Role.ADMIN

    await rk.queue("mail").enqueue("send", {"to": "a@b.c"})
    store = rk.sessions(idle_ttl=600, absolute_ttl=3600)
    app = make_app(rk, auth=counting, sessions=store)
    async with serve(app) as base, await client(base, None) as c:
        for path in [*PAGES, "/limits?key=ip:1", "/sessions?user=u1", "/jobs/search?q=x"]:
            asked.clear()
            page = await c.get(path)
            assert page.status_code == 200, path
            assert len(asked) == 1, path


async def test_an_open_stream_ends_once_its_viewer_loses_access(rk: redkit.Redkit) -> None:
    allowed = {"admin"}

    def revocable(conn: Any) -> Role | None:
        return Role.ADMIN if "admin" in allowed else None

    app = make_app(rk, auth=revocable)
    app.routes[0].app.state.dashboard.keepalive = 0.1  # type: ignore[attr-defined]
    async with serve(app) as base, await client(base, None) as c:
        for path in ("/stream?view=audit", "/feed"):
            allowed.add("admin")
            async with c.stream("GET", path) as stream:
                assert stream.status_code == 200
                allowed.clear()
                async with asyncio.timeout(10):
                    async for _ in stream.aiter_lines():
                        pass  # the server ends the stream: the loop finishes


@pytest.mark.cluster
async def test_the_feed_streams_published_events_masked_and_filtered(
    rk: redkit.Redkit,
) -> None:
    # On a Cluster, pattern subscriptions need the classic copy of each publish.
    bus = rk.notifications(cluster_patterns=True)
    async with (
        serve(make_app(rk, bus=bus)) as base,
        await client(base, "admin") as c,
        c.stream("GET", "/feed?filter=deploy:*") as feed,
    ):
        assert feed.status_code == 200
        lines = feed.aiter_lines()
        async with asyncio.timeout(10):
            async for line in lines:
                if line == "event: ready":
                    break
            assert await anext(lines) == "data: {}"
            await bus.publish("other:x", {"skip": True})
            await bus.publish("deploy:p1", {"status": "ok", "secret": "s3"})
            async for line in lines:
                if line.startswith("data:"):
                    event = orjson.loads(line[5:])
                    assert event["channel"] == "deploy:p1"
                    assert event["data"] == {"status": "ok", "secret": MASK}
                    break


@pytest.mark.cluster
async def test_on_a_cluster_without_pattern_support_the_feed_says_what_to_pass(
    rk: redkit.Redkit, url: str
) -> None:
    sharded = rk.notifications().sharded
    async with await client(url, "admin") as c:
        page = await c.get("/notifications")
        assert ("cluster_patterns=True" in page.text) is sharded
        if sharded:
            feed = await c.get("/feed")  # refused before any stream starts
            assert feed.status_code == 400
            assert "cluster_patterns" in feed.json()["error"]
