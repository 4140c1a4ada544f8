"""Fixtures: real servers, started by the suite itself on free ports.

``rk`` is a :class:`redkit.Redkit` in a namespace of its own. It runs on the standalone server;
a test marked ``@pytest.mark.cluster`` runs on the 3-master Cluster as well. With ``REDIS_URL``
in the environment, every ``rk`` test runs against that server instead (and nothing is started).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import redkit
from redkit.embedded import ValkeyProcess, find_free_port
from servers import TEST_CONFIG, Cluster, start_standalone

EXTERNAL_URL = os.environ.get("REDIS_URL") or None
_timings: dict[str, float] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server_kind" not in metafunc.fixturenames:
        return
    if EXTERNAL_URL:
        kinds = ["external"]
    elif metafunc.definition.get_closest_marker("cluster"):
        kinds = ["standalone", "cluster"]
    else:
        kinds = ["standalone"]
    metafunc.parametrize("server_kind", kinds, scope="session")


def _skip_if_external() -> None:
    if EXTERNAL_URL:
        pytest.skip("REDIS_URL is set: the suite uses that server and starts none of its own")


@pytest.fixture(scope="session")
def standalone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyProcess]:
    _skip_if_external()
    began = time.perf_counter()
    server = start_standalone(tmp_path_factory.mktemp("servers"))
    _timings["standalone server start"] = time.perf_counter() - began
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _skip_if_external()
    started = Cluster(tmp_path_factory.mktemp("cluster")).start()
    _timings["3-master cluster start"] = started.start_seconds
    yield started
    started.stop()


@pytest.fixture(scope="session")
def redis_url(server_kind: str, request: pytest.FixtureRequest) -> str:
    """The URL of the server this test runs on."""
    if server_kind == "external":
        assert EXTERNAL_URL is not None
        return EXTERNAL_URL
    if server_kind == "cluster":
        return str(request.getfixturevalue("cluster").url)
    return str(request.getfixturevalue("standalone_server").url)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ValkeyProcess]:
    """A fresh standalone server for one test, which may kill, pause (SIGSTOP) and restart it;
    resumed (a no-op unless paused) and stopped after."""
    server = ValkeyProcess(tmp_path, port=find_free_port(), config=TEST_CONFIG).start()
    yield server
    server.resume()
    server.stop()


@pytest.fixture
def namespace() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
async def rk(redis_url: str, namespace: str) -> AsyncIterator[redkit.Redkit]:
    """A Redkit on this test's server, in a fresh namespace that is emptied afterwards."""
    async with redkit.connect(redis_url, namespace) as client:
        yield client
        async for key in client.redis.scan_iter(match=client.keys.pattern, count=1000):
            await client.redis.unlink(key)


@pytest.fixture
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of the embedded server: ignore a REDIS_URL given to the suite."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDKIT_REDIS_URL", raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _timings:
        terminalreporter.section("server start times")
        for name, value in _timings.items():
            terminalreporter.write_line(f"{name}: {value * 1000:.0f} ms")
