"""The dashboard's extension point: an application's own views (``views=``), over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from markupsafe import escape
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route

import redkit
from dashboard.helpers import make_app, serve
from redkit.dashboard import View, ViewContext, Viewer, dashboard_app
from redkit.dashboard.data import audit_entries
from redkit.dashboard.views import RESERVED
from redkit.errors import ConfigurationError, InvalidInput

ORDERS = {"42": "open", "43": "open"}


async def orders(ctx: ViewContext) -> str:
    q = ctx.request.query_params.get("q", "")
    rows = "".join(
        f'<li data-order="{k}">{k}: {v}'
        + (
            f' <button data-action="orders.refund" data-key="{k}">Refund</button>'
            if ctx.admin
            else ""
        )
        + "</li>"
        for k, v in ORDERS.items()
    )
    return f"<h1>Orders</h1><p>search: {escape(q)}</p><p>base={ctx.base}</p><ul>{rows}</ul>"


async def refund(body: dict[str, Any], viewer: Viewer) -> tuple[str, str]:
    key = body.get("key")
    if not isinstance(key, str):
        raise InvalidInput("name the order")
    if key not in ORDERS:
        raise HTTPException(404, f"no order {key}")
    ORDERS[key] = f"refunded by {viewer.name}"
    return key, "refunded"


VIEWS = [View("orders", "Orders", orders, actions={"refund": refund})]


@pytest.fixture
async def url(rk: redkit.Redkit) -> AsyncIterator[str]:
    ORDERS.update({"42": "open", "43": "open"})
    async with serve(make_app(rk, views=VIEWS)) as base:
        yield base


def client(url: str, role: str | None) -> httpx.AsyncClient:
    headers = {"accept": "text/html", **({"x-role": role} if role else {})}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)


async def test_a_view_gets_a_nav_entry_and_its_page_inside_the_layout(url: str) -> None:
    async with client(url, "admin") as c:
        overview = await c.get("/")
        assert 'href="/redkit/orders"' in overview.text
        page = await c.get("/orders", params={"q": "<script>"})
        assert page.status_code == 200
        assert 'aria-current="page">Orders' in page.text
        assert "<title>Orders · redkit dashboard</title>" in page.text
        assert "search: &lt;script&gt;" in page.text
        assert "base=/redkit" in page.text
        assert 'data-action="orders.refund"' in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_a_view_is_behind_the_same_auth_and_read_only_sees_no_buttons(url: str) -> None:
    async with client(url, None) as c:
        assert (await c.get("/orders")).status_code == 403
    async with client(url, "ro") as c:
        page = await c.get("/orders")
        assert page.status_code == 200
        assert "data-action" not in page.text


async def test_a_views_action_is_csrf_checked_refused_to_read_only_and_audited(
    rk: redkit.Redkit, url: str
) -> None:
    async with client(url, "admin") as c:
        await c.get("/orders")
        token = c.cookies["redkit_dashboard_csrf"]
        unchecked = await c.post("/actions/orders.refund", json={"key": "42"})
        assert unchecked.status_code == 403
        assert ORDERS["42"] == "open"
        done = await c.post(
            "/actions/orders.refund", json={"key": "42"}, headers={"x-csrf-token": token}
        )
        assert done.json() == {"ok": True, "message": "refunded"}
        assert ORDERS["42"] == "refunded by alice@example.com"
        missing = await c.post(
            "/actions/orders.refund", json={"key": "7"}, headers={"x-csrf-token": token}
        )
        assert missing.status_code == 404
        assert missing.json() == {"error": "no order 7"}
        unknown = await c.post("/actions/orders.nothing", json={}, headers={"x-csrf-token": token})
        assert unknown.status_code == 404
    async with client(url, "ro") as c:
        await c.get("/orders")
        token = c.cookies["redkit_dashboard_csrf"]
        refused = await c.post(
            "/actions/orders.refund", json={"key": "43"}, headers={"x-csrf-token": token}
        )
        assert refused.status_code == 403
    assert ORDERS["43"] == "open"
    entries = await audit_entries(rk)
    assert [(e["action"], e["target"], e["result"]) for e in entries[:2]] == [
        ("orders.refund", "7", "refused: no order 7"),
        ("orders.refund", "42", "refunded"),
    ]


@pytest.mark.parametrize("key", ["jobs", "static", "Orders", "", "a/b", "x" * 40])
def test_a_view_cannot_take_a_dashboard_path_or_a_bad_key(rk: redkit.Redkit, key: str) -> None:
    with pytest.raises(ConfigurationError, match="key"):
        dashboard_app(rk, auth=lambda r: None, views=[View(key, "X", orders)])


def test_views_must_be_views_with_unique_keys_and_named_actions(rk: redkit.Redkit) -> None:
    with pytest.raises(ConfigurationError, match="list"):
        dashboard_app(rk, auth=lambda r: None, views=VIEWS[0])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unique"):
        dashboard_app(rk, auth=lambda r: None, views=[VIEWS[0], VIEWS[0]])
    with pytest.raises(ConfigurationError, match="action"):
        dashboard_app(
            rk, auth=lambda r: None, views=[View("x", "X", orders, actions={"Bad Name": refund})]
        )


def test_reserved_names_every_first_path_segment_the_dashboard_serves(rk: redkit.Redkit) -> None:
    """An application routing only the dashboard's own paths to it (the platform's gateway
    does) relies on this list."""
    app = dashboard_app(rk, auth=lambda r: None)
    segments = set()
    for route in app.routes:
        assert isinstance(route, Route | Mount)
        segments.add(route.path.lstrip("/").split("/", 1)[0])
    assert segments - {""} == set(RESERVED)
