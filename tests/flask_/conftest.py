"""Fixtures for the Flask tests: an app per test on the suite's real server, in a fresh
namespace; a real HTTP server (werkzeug's) where the test needs one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

import redkit.sync
from flask_.app import create_app
from redkit.flask.extension import _state

AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(redis_url: str, namespace: str) -> Iterator[AppFactory]:
    """Build apps on this test's server and namespace; their clients are closed and the
    namespace emptied afterwards."""
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = create_app(redis_url, namespace, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        _state(app).close()
    with redkit.sync.connect(redis_url, namespace) as rk:
        for key in rk.redis.scan_iter(match=rk.keys.pattern, count=1000):
            rk.redis.unlink(key)


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """Serve an app on loopback (a threaded werkzeug server); returns its base URL."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(10)
        server.server_close()
