"""RedkitWeb's 429s have one shape; the web layer uses only public names of the modules below
it; docstrings speak to users (no brief, no platform)."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

import redkit
from redkit.ratelimit.fastapi import RateLimitExceeded
from redkit.web import RateLimitConfig, RedkitWeb

SRC = Path(redkit.__file__).resolve().parent


def limited_app(
    rk: redkit.Redkit, redis_url: str, app: FastAPI | None = None
) -> tuple[FastAPI, RedkitWeb]:
    app = app or FastAPI()
    web = RedkitWeb(
        app,
        url=redis_url,
        namespace=rk.namespace,
        rate_limits=RateLimitConfig(
            tiers={"anonymous": [(1, 60)], "user": [(100, 60)]}, exempt=["/route"]
        ),
    )

    @app.get("/middleware")  # limited by the tier middleware only
    async def by_middleware() -> str:
        return "ok"

    @app.get("/route", dependencies=[Depends(web.rate_limit(1, 60))])  # by the dependency only
    async def by_route() -> str:
        return "ok"

    return app, web


async def rejections(app: FastAPI, web: RedkitWeb) -> dict[str, httpx.Response]:
    async with web.running(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            found = {}
            for path in ("/middleware", "/route"):
                assert (await http.get(path)).status_code == 200
                found[path] = await http.get(path)
                assert found[path].status_code == 429
            return found


async def test_a_route_limit_and_the_tier_middleware_answer_429_with_one_flat_body(
    rk: redkit.Redkit, redis_url: str
) -> None:
    found = await rejections(*limited_app(rk, redis_url))
    middleware, route = found["/middleware"].json(), found["/route"].json()
    assert "detail" not in route
    assert route["error"] == middleware["error"] == "rate_limited"
    assert set(route) == set(middleware)
    for response in found.values():
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["retry-after"]) >= 1


async def test_a_handler_the_app_registered_for_429s_is_kept(
    rk: redkit.Redkit, redis_url: str
) -> None:
    async def mine(request: Request, exc: Exception) -> Response:
        return JSONResponse({"mine": True}, status_code=429)

    app, web = limited_app(rk, redis_url, FastAPI(exception_handlers={RateLimitExceeded: mine}))
    assert app.exception_handlers[RateLimitExceeded] is mine
    found = await rejections(app, web)
    assert found["/route"].json() == {"mine": True}


async def test_a_route_limit_refusing_its_key_answers_a_flat_400(
    rk: redkit.Redkit, redis_url: str
) -> None:
    app = FastAPI()
    web = RedkitWeb(app, url=redis_url, namespace=rk.namespace)

    @app.get("/keyed", dependencies=[Depends(web.rate_limit(5, 60, key=lambda r: "k" * 5000))])
    async def keyed() -> str:
        return "ok"

    async with web.running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.get("/keyed")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("redkit"):
            module = node.module or ""
            if module.startswith("redkit.web"):
                continue
            found += [
                f"{module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_") or any(p.startswith("_") for p in module.split("."))
            ]
    return found


def test_the_web_layer_imports_only_public_names_of_the_modules_below() -> None:
    private = {
        str(path.relative_to(SRC)): names
        for path in sorted((SRC / "web").glob("*.py"))
        if (names := _private_imports(path))
    }
    assert private == {}


def test_docstrings_speak_to_users_who_never_saw_a_brief() -> None:
    # The platform and the dashboard are products of their own, and may name themselves; so
    # may the platform's command (`redkit up`).
    own = ("platform", "dashboard")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in own or path.relative_to(SRC) == Path("cli/up.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            lower = line.lower()
            if "brief" in lower or "the platform" in lower:
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert found == []
