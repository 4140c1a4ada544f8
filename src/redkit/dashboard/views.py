"""Extra views: how an application adds its own pages (and actions) to the dashboard.

::

    from redkit.dashboard import View, ViewContext, dashboard_app

    async def orders(ctx: ViewContext) -> str:
        rows = await shop.latest_orders(ctx.request.query_params.get("q", ""))
        return render_my_template(rows, admin=ctx.admin)      # HTML; escape what you write

    async def refund(body: dict, viewer: Viewer) -> tuple[str, str]:
        order = body.get("key")                               # from the button's data-key
        await shop.refund(order)
        return str(order), "refunded"                         # (target, result) for the audit

    app.mount("/redkit", dashboard_app(rk, auth=who, views=[
        View("orders", "Orders", orders, actions={"refund": refund}),
    ]))

A view gets a nav entry and the page ``<base>/<key>`` (behind the same ``auth`` as every
page, with the same security headers); its HTML goes inside the dashboard's layout, so its
buttons work like the built-in ones: ``<button data-action="orders.refund" data-key="42"
data-confirm="Refund order 42?" data-reload>`` posts ``{"key": "42"}`` with the CSRF token to
the action ``refund`` of the view ``orders``, which is refused for read-only viewers and
written to the audit log like every action. The button's ``data-`` fields sent are
``queue, job, name, channel, cache, tag, limiter, key, user, session``. An action raises
:class:`~redkit.errors.InvalidInput` (400) or Starlette's ``HTTPException`` to refuse.

The dashboard imports nothing of the application: the application imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup
from starlette.requests import Request

from redkit.dashboard.security import Viewer
from redkit.errors import ConfigurationError

__all__ = ["View", "ViewAction", "ViewContext", "when"]

_KEY = re.compile(r"[a-z][a-z0-9-]{0,30}")
_ACTION = re.compile(r"[a-z][a-z0-9_-]{0,40}")
# Paths the dashboard serves itself: a view cannot take one.
RESERVED = frozenset(
    {
        "jobs", "locks", "notifications", "sessions", "cache", "limits", "audit", "stream",
        "feed", "actions", "static",
    }
)  # fmt: skip


def when(ts: float | None) -> Markup:
    """A ``<time>`` element that the dashboard's script shows in the browser's time zone."""
    if ts is None:
        return Markup("—")
    iso = datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
    return Markup('<time datetime="{0}">{1}</time>').format(iso, iso.replace("+00:00", "Z"))


@dataclass(frozen=True, slots=True)
class ViewContext:
    """What a view's ``render`` gets: the request and who is looking."""

    request: Request
    viewer: Viewer
    admin: bool
    """True when the viewer may act (draw the action buttons only then)."""
    base: str
    """The dashboard's mount path (``""`` at the root): prefix your links with it."""


ViewAction = Callable[[dict[str, Any], Viewer], Awaitable[tuple[str, str]]]
"""``action(body, viewer) -> (target, result)``: both are written to the audit log."""


@dataclass(frozen=True, slots=True)
class View:
    """A page of the application's own in the dashboard (see the module docstring)."""

    key: str
    """The page's path segment and the prefix of its actions' names: ``[a-z][a-z0-9-]*``."""
    label: str
    """The nav entry's text and the page's title."""
    render: Callable[[ViewContext], Awaitable[str]]
    """The page's HTML (the part inside the layout). Escape what you put in it."""
    actions: Mapping[str, ViewAction] = field(default_factory=dict)
    """Action name -> handler; posted as ``actions/<key>.<name>``."""


def check_views(views: object) -> tuple[View, ...]:
    if views is None:
        return ()
    if isinstance(views, View | str | bytes) or not hasattr(views, "__iter__"):
        raise ConfigurationError("views= is a list of redkit.dashboard.View")
    out: list[View] = []
    seen: set[str] = set()
    for view in views:
        if not isinstance(view, View):
            raise ConfigurationError(f"views= holds redkit.dashboard.View, not {view!r}")
        if not _KEY.fullmatch(view.key) or view.key in RESERVED or view.key in seen:
            raise ConfigurationError(
                f"a view's key is [a-z][a-z0-9-]* (at most 31), unique and none of the "
                f"dashboard's own paths; got {view.key!r}"
            )
        for name, handler in view.actions.items():
            if not isinstance(name, str) or not _ACTION.fullmatch(name) or not callable(handler):
                raise ConfigurationError(
                    f"view {view.key!r}: an action is name -> async (body, viewer) handler, "
                    f"names [a-z][a-z0-9_-]*; got {name!r}"
                )
        seen.add(view.key)
        out.append(view)
    return tuple(out)
