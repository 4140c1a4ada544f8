"""The harness of the tests that run ``redkit up`` as a user does: a real subprocess, real
servers, real HTTP. Each test module that takes the ``up`` fixture gets a platform of its own
(module scope), so the modules' rate-limit buckets and data never meet."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from redkit.embedded import find_free_port

START_TIMEOUT = 120.0
PASSWORD = "correct horse battery"


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    data_dir: Path
    gateway: str
    state: dict[str, Any]
    output: Path

    def part(self, name: str) -> dict[str, Any]:
        return next(p for p in self.state["parts"] if p["name"] == name)


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids += [int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return kids


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo and len(found) < 1000:
        for kid in children(todo.pop()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "admin password for tests"


def start_up(base: Path, extra_env: dict[str, str] | None = None) -> Up:
    port = find_free_port()
    data_dir = base / ".redkit"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "REDKIT_SMTP_URL", "REDKIT_PLATFORM_DIR")
    }
    env.update(REDKIT_ADMIN_EMAIL=ADMIN_EMAIL, REDKIT_ADMIN_PASSWORD=ADMIN_PASSWORD)
    env.update(extra_env or {})
    output = base / "up.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "redkit.cli", "up", "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=base, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    gateway = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"redkit up exited early:\n{output.read_text()[-3000:]}")
        state_file = data_dir / "up.json"
        if state_file.exists():
            try:
                if httpx.get(f"{gateway}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"redkit up was not healthy in time:\n{output.read_text()[-3000:]}"
            )
        time.sleep(0.2)
    state = json.loads((data_dir / "up.json").read_text())
    return Up(process, data_dir, gateway, state, output)


def stop_up(up: Up, timeout: float = 60) -> int:
    if up.process.poll() is None:
        up.process.send_signal(signal.SIGTERM)
        try:
            up.process.wait(timeout)
        except subprocess.TimeoutExpired:
            up.process.kill()
            up.process.wait(10)
            raise
    return up.process.returncode


@pytest.fixture
def base() -> Iterator[Path]:
    # Not tmp_path (0700): as root, PostgreSQL runs as an unprivileged user that must enter it.
    path = Path(tempfile.mkdtemp(prefix="redkit-up-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def random_loopback() -> str:
    """A loopback address (127.x.y.z) few others use: a client of its own, as on a network."""
    return f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A client with a loopback address of its own (127.x.y.z): anonymous requests are limited
    per client IP, and each test must be a client of its own, as on a real network."""
    address = random_loopback()
    transport = httpx.HTTPTransport(local_address=address)
    # No cookie jar: each test says which cookies it sends.
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    with httpx.Client(transport=transport, timeout=30, cookies=jar) as client:
        yield client


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    path = Path(tempfile.mkdtemp(prefix="redkit-up-"))
    path.chmod(0o755)
    started = start_up(path)
    yield started
    stop_up(started)
    shutil.rmtree(path, ignore_errors=True)


def log_of(up: Up, name: str) -> str:
    return (up.data_dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]


def admin_redis_url(up: Up) -> str:
    password = (up.data_dir / "valkey.password").read_text().strip()
    host = up.part("valkey")["url"].rpartition("@")[2]
    return f"redis://redkit:{password}@{host}"


def new_email() -> str:
    return f"ada-{secrets.token_hex(4)}@example.com"


def register(up: Up, http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post(
        f"{up.gateway}/auth/register",
        json={"email": email, "password": password, "name": "Ada"},
    )


def login(up: Up, http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post(
        f"{up.gateway}/auth/login", json={"email": email, "password": password}, timeout=30
    )


def signed_in(up: Up, http: httpx.Client) -> dict[str, str]:
    email = new_email()
    register(up, http, email)
    return {"authorization": f"Bearer {login(up, http, email).json()['token']}"}


def database_count(up: Up, name: str) -> int:
    async def count() -> int:
        password = (up.data_dir / "postgres.password").read_text().strip()
        host = up.part("postgres")["url"].rpartition("@")[2].split("/")[0]
        conn = await asyncpg.connect(f"postgresql://postgres:{password}@{host}/postgres")
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def start_deployment(up: Up, http: httpx.Client, headers: dict[str, str], steps: list[str]) -> str:
    project = http.post(
        f"{up.gateway}/api/projects",
        json={"name": "d" + secrets.token_hex(4), "steps": steps},
        headers=headers,
    ).json()
    started = http.post(
        f"{up.gateway}/api/projects/{project['id']}/deployments", json={}, headers=headers
    )
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "queued"
    assert body["job_id"]
    return str(body["id"])


def finished(up: Up, http: httpx.Client, headers: dict[str, str], deployment: str) -> Any:
    deadline = time.monotonic() + 90
    while True:
        shown = http.get(f"{up.gateway}/api/deployments/{deployment}", headers=headers).json()
        if shown["status"] in ("success", "failed"):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)
