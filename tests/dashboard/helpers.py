"""The dashboard on a real uvicorn server, mounted under /redkit, with a test auth callback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Mount

import redkit
from redkit.dashboard import Role, Viewer, dashboard_app
from uvicorn_server import serve_in_loop

PREFIX = "/redkit"
ROLES: dict[str, Role | Viewer] = {
    "admin": Viewer(Role.ADMIN, "alice@example.com"),
    "ro": Role.READ_ONLY,
}


def who(conn: HTTPConnection) -> Role | Viewer | None:
    """The test's auth: the role named by an ``x-role`` header or a ``role`` cookie."""
    name = conn.headers.get("x-role") or conn.cookies.get("role") or ""
    return ROLES.get(name)


def make_app(rk: redkit.Redkit, **options: Any) -> Starlette:
    options.setdefault("auth", who)
    options.setdefault("interval", 0.1)
    return Starlette(routes=[Mount(PREFIX, dashboard_app(rk, **options))])


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """``app`` on a real uvicorn server on a free port; yields the dashboard's URL."""
    async with serve_in_loop(app, lifespan="off", timeout_graceful_shutdown=1) as url:
        yield f"{url}{PREFIX}"
