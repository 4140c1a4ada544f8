"""The dashboard in a real browser: Playwright for Python driving the system's Chromium.

Playwright cannot download its own browser on these machines, so the tests use an installed
Chromium (``apt-get install chromium``; or set ``REDKIT_CHROMIUM`` to a Chromium binary).
Without one they skip, saying how to install it; with ``REDKIT_REQUIRE_BROWSER=1`` (set by
``.ci/run``) a missing browser fails them instead. Screenshots of every view go to
``artifacts/`` (ignored by git).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import redkit
from dashboard.helpers import make_app, serve
from jobs.helpers import running
from redkit.dashboard import MASK
from redkit.jobs import JobState

try:
    from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None  # type: ignore[assignment]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
INSTALL_HINT = (
    "no Chromium found for the browser tests: install one with `apt-get install chromium` "
    "(Debian/Ubuntu), or set REDKIT_CHROMIUM=/path/to/chromium"
)


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("REDKIT_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    if path is None or async_playwright is None:
        reason = (
            INSTALL_HINT if path is None else "playwright is not installed (pip install -e .[dev])"
        )
        if os.environ.get("REDKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"REDKIT_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    async with async_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        launched = await p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    page: Page
    url: str
    errors: list[str] = field(default_factory=list)

    async def go(self, path: str) -> None:
        response = await self.page.goto(self.url + path)
        assert response is not None
        assert response.status == 200, path

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    async def no_horizontal_scroll(self) -> None:
        overflow = await self.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{self.page.url} scrolls sideways by {overflow}px"


@asynccontextmanager
async def tab(
    browser: Browser, url: str, role: str | None = "admin", viewport: ViewportSize = DESKTOP
) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport=viewport)
    if role:
        await context.add_cookies([{"name": "role", "value": role, "url": url}])
    page = await context.new_page()
    t = Tab(page, url)
    page.on("console", lambda m: t.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: t.errors.append(str(e)))
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    try:
        yield t
    finally:
        await context.close()


async def decline(payload: dict[str, Any]) -> None:
    raise RuntimeError(f"card declined for order {payload['order']}")


async def a_failed_job(rk: redkit.Redkit, order: int = 42) -> str:
    q = rk.queue("billing")
    async with running(rk.worker([q], {"charge": decline}, handle_signals=False)):
        job = await q.enqueue(
            "charge", {"order": order, "card_token": "tok_live_123"}, max_attempts=1
        )
        with pytest.raises(redkit.JobFailed):
            await job.result(timeout=10)
    return job.id


async def test_the_overview_shows_live_figures(rk: redkit.Redkit, browser: Browser) -> None:
    q = rk.queue("email")
    for n in range(2):
        await q.enqueue("send_email", {"to": f"user{n}@example.com"})
    async with serve(make_app(rk)) as url, tab(browser, url) as t:
        await t.go("/")
        waiting = t.page.locator('[data-figure="jobs-waiting"]')
        await expect(waiting).to_have_text("2")
        await expect(t.page.locator("#live-status")).to_have_text("live")
        await q.enqueue("send_email", {"to": "late@example.com"})
        await expect(waiting).to_have_text("3")
        async with rk.lock("reports:nightly", ttl=30):
            await expect(t.page.locator('[data-figure="locks-held"]')).to_have_text("1")
        await expect(t.page.locator('[data-figure="locks-held"]')).to_have_text("0")
        assert t.errors == []


async def test_a_job_enqueued_through_the_api_appears_without_a_reload(
    rk: redkit.Redkit, browser: Browser
) -> None:
    q = rk.queue("email")
    await q.enqueue("send_email", {"to": "first@example.com"})
    async with serve(make_app(rk)) as url, tab(browser, url) as t:
        await t.go("/jobs/email?state=waiting")
        await expect(t.page.locator("tr[data-job]")).to_have_count(1)
        await expect(t.page.locator("#live-status")).to_have_text("live")
        job = await q.enqueue("send_email", {"to": "second@example.com", "password": "x"})
        await expect(t.page.locator(f'tr[data-job="{job.id}"]')).to_be_visible()
        await t.page.locator(f'tr[data-job="{job.id}"] a').click()
        await expect(t.page.locator("[data-payload]")).to_contain_text("second@example.com")
        await expect(t.page.locator("[data-payload]")).to_contain_text(MASK)
        assert t.errors == []


async def test_a_failing_job_shows_in_failed_is_found_by_search_and_retry_requeues_it(
    rk: redkit.Redkit, browser: Browser
) -> None:
    job_id = await a_failed_job(rk, order=7031)
    q = rk.queue("billing")
    async with serve(make_app(rk)) as url, tab(browser, url) as t:
        await t.go("/jobs/billing?state=failed")
        row = t.page.locator(f'tr[data-job="{job_id}"]')
        await expect(row).to_contain_text("card declined for order 7031")
        await t.go("/jobs")
        await t.page.get_by_label("Search failed jobs").fill("ORDER 7031")
        await t.page.get_by_label("Search failed jobs").press("Enter")
        found = t.page.locator(f'table.results tr[data-job="{job_id}"]')
        await expect(found).to_be_visible()
        await t.shot("search")
        await found.get_by_role("button", name="Retry").click()
        await expect(t.page.locator("#toast")).to_have_text("queued again")
        job = await q.get(job_id)
        assert job is not None
        assert job.state is JobState.WAITING
        await t.go("/jobs/billing?state=failed")
        await expect(t.page.locator("tr[data-job]")).to_have_count(0)
        await t.go("/audit")
        await expect(t.page.locator("table.audit")).to_contain_text("job.retry")
        assert t.errors == []


async def test_a_held_lock_appears_and_disappears(rk: redkit.Redkit, browser: Browser) -> None:
    async with serve(make_app(rk)) as url, tab(browser, url) as t:
        await t.go("/locks")
        await expect(t.page.locator(".empty")).to_contain_text("Nothing is held")
        row = t.page.locator('tr[data-lock="deploy:p1"]')
        async with rk.lock("deploy:p1", ttl=30) as held:
            await expect(row).to_be_visible()
            await expect(row).to_contain_text(str(held.fencing_token))
            held_for = row.locator("td.held-for")
            await expect(held_for).not_to_have_text("—")
            # Pushed again as it grows (the ticker re-renders the held locks).
            first = await held_for.inner_text()
            await expect(held_for).not_to_have_text(first, timeout=15_000)
            await t.shot("locks")
        await expect(row).to_have_count(0)
        assert t.errors == []


async def test_an_event_published_appears_in_the_feed_within_a_second(
    rk: redkit.Redkit, browser: Browser
) -> None:
    bus = rk.notifications()
    async with serve(make_app(rk)) as url, tab(browser, url) as t:
        await t.go("/notifications")
        await expect(t.page.locator("#feed[data-ready]")).to_have_count(1)
        await bus.publish("deployment:p1", {"status": "building", "api_key": "sk_live"})
        item = t.page.locator("#feed li").filter(has_text="deployment:p1")
        await expect(item).to_be_visible(timeout=1000)
        await expect(item).to_contain_text("building")
        await expect(item).to_contain_text(MASK)
        await expect(item).not_to_contain_text("sk_live")
        # The filter is applied on the server: other channels stop arriving.
        await t.page.locator("#filter").fill("system:*")
        await t.page.locator("#filter").press("Enter")
        await expect(t.page.locator('#feed[data-ready="system:*"]')).to_have_count(1)
        await bus.publish("deployment:p1", {"status": "ignored"})
        await bus.publish("system:alert", {"level": "warn"})
        await expect(t.page.locator("#feed li").filter(has_text="system:alert")).to_be_visible()
        await expect(t.page.locator("#feed li")).to_have_count(1)
        # Publish a test event from the page itself.
        await t.page.get_by_label("Publish to channel").fill("dashboard:test")
        await t.page.get_by_role("button", name="Publish").click()
        await expect(t.page.locator("#toast")).to_contain_text("published event")
        await t.shot("notifications")
        assert t.errors == []


async def test_a_read_only_user_sees_but_cannot_act(rk: redkit.Redkit, browser: Browser) -> None:
    job_id = await a_failed_job(rk)
    async with serve(make_app(rk)) as url, tab(browser, url, role="ro") as t:
        await t.go("/jobs/billing?state=failed")
        await expect(t.page.locator(f'tr[data-job="{job_id}"]')).to_be_visible()
        await expect(t.page.locator(".notice")).to_contain_text("read-only")
        await expect(t.page.locator("[data-action]")).to_have_count(0)
        reply = await t.page.evaluate(
            """async (job) => {
                const csrf = document.querySelector('meta[name="rk-csrf"]').content;
                const r = await fetch(location.pathname.replace(/jobs.*$/, "actions/job.retry"), {
                    method: "POST", headers: {"content-type": "application/json",
                    "x-csrf-token": csrf}, body: JSON.stringify({queue: "billing", job})});
                return [r.status, await r.json()];
            }""",
            job_id,
        )
        assert reply == [403, {"error": "read-only access: this role cannot act"}]
        job = await rk.queue("billing").get(job_id)
        assert job is not None
        assert job.state is JobState.FAILED


async def test_a_viewer_without_a_role_gets_no_dashboard(
    rk: redkit.Redkit, browser: Browser
) -> None:
    async with serve(make_app(rk)) as url, tab(browser, url, role=None) as t:
        response = await t.page.goto(url + "/")
        assert response is not None
        assert response.status == 403
        await expect(t.page.locator("h1")).to_have_text("Not allowed")
        await expect(t.page.locator("[data-live]")).to_have_count(0)


async def test_a_revoked_session_is_gone_from_the_list_and_no_longer_valid(
    rk: redkit.Redkit, browser: Browser
) -> None:
    store = rk.sessions(idle_ttl=600, absolute_ttl=3600)
    session = await store.create("ada", {"cart": 3}, ip="203.0.113.7", user_agent="Firefox")
    async with serve(make_app(rk, sessions=store)) as url, tab(browser, url) as t:
        await t.go("/sessions?user=ada")
        rows = t.page.locator("tr[data-session]")
        await expect(rows).to_have_count(1)
        await expect(rows).to_contain_text("203.0.113.7")
        await expect(t.page.locator('[data-figure="sessions-active-5"]')).to_have_text("1")
        await expect(t.page.locator('[data-figure="sessions-revoked-5"]')).to_have_text("0")
        await t.shot("sessions")
        await t.page.get_by_role("button", name="Revoke all sessions of ada").click()
        await expect(t.page.locator("#toast")).to_have_text("1 session(s) revoked")
        await expect(t.page.locator(".empty")).to_have_text("ada has no live session.")
        # Ended, but it was active in the window; the revocation counts.
        await expect(t.page.locator('[data-figure="sessions-revoked-5"]')).to_have_text("1")
        await expect(t.page.locator('[data-figure="sessions-active-5"]')).to_have_text("1")
        assert await store.get(session.id) is None  # its client's next request gets a 401
        assert t.errors == []


VIEWS = {
    "overview": "/",
    "jobs": "/jobs",
    "queue-failed": "/jobs/billing?state=failed",
    "locks": "/locks",
    "notifications": "/notifications?channel=deployment:p1",
    "sessions": "/sessions?user=ada",
    "cache": "/cache",
    "limits": "/limits?key=ip:203.0.113.7",
    "audit": "/audit",
}


def _views(job_id: str) -> Iterator[tuple[str, str]]:
    yield from VIEWS.items()
    yield "job", f"/jobs/billing/job/{job_id}"


async def test_every_view_fits_a_desktop_and_a_phone_without_console_errors(
    rk: redkit.Redkit, browser: Browser
) -> None:
    job_id = await a_failed_job(rk)
    await rk.queue("email").enqueue("send_email", {"to": "a@example.com"}, delay=600)
    await rk.notifications().publish("deployment:p1", {"status": "live", "url": "https://p1.x"})
    cache = rk.cache()
    await cache.set("page:/", "<html>", tags=["pages"])
    await cache.get("page:/")
    await cache.get("page:/missing")
    limiter = rk.rate_limiter(limit=5, window=60, name="api")
    await limiter.hit("ip:203.0.113.7")
    store = rk.sessions(idle_ttl=600, absolute_ttl=3600)
    await store.create("ada", {}, ip="203.0.113.7", user_agent="Mozilla/5.0 (X11; Linux x86_64)")
    app = make_app(rk, caches={"pages": cache}, limiters={"api": limiter}, sessions=store)
    async with serve(app) as url, rk.lock("db:migrate", ttl=60):
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            async with tab(browser, url, viewport=viewport) as t:
                for view, path in _views(job_id):
                    await t.go(path)
                    await expect(t.page.locator("#live-status")).not_to_have_text("connecting…")
                    await t.no_horizontal_scroll()
                    await t.shot(f"{view}-{name}" if name == "phone" else view)
                # Keyboard reachable: Tab from the top reaches the navigation and the actions.
                await t.go("/jobs/billing?state=failed")
                reached: set[str] = set()
                for _ in range(40):
                    await t.page.keyboard.press("Tab")
                    reached.add(
                        await t.page.evaluate(
                            "document.activeElement.dataset.action || "
                            "document.activeElement.textContent.trim()"
                        )
                    )
                assert {"Overview", "Jobs", "Locks", "job.retry"} <= reached
                assert t.errors == [], name
