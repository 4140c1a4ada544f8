"""``redkit up`` as a user runs it: a real subprocess, real servers, real HTTP, then SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from redkit.cli import app
from redkit.embedded import find_free_port

START_TIMEOUT = 120.0


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    data_dir: Path
    gateway: str
    state: dict[str, Any]
    output: Path

    def part(self, name: str) -> dict[str, Any]:
        return next(p for p in self.state["parts"] if p["name"] == name)


def _children(pid: int) -> list[int]:
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


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo and len(found) < 1000:
        for kid in _children(todo.pop()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _start(base: Path) -> Up:
    port = find_free_port()
    data_dir = base / ".redkit"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "REDKIT_SMTP_URL", "REDKIT_PLATFORM_DIR")
    }
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


def _stop(up: Up, timeout: float = 60) -> int:
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


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    path = Path(tempfile.mkdtemp(prefix="redkit-up-"))
    path.chmod(0o755)
    started = _start(path)
    yield started
    _stop(started)
    shutil.rmtree(path, ignore_errors=True)


def test_the_gateway_health_is_200_naming_every_part(up: Up) -> None:
    body = httpx.get(f"{up.gateway}/healthz", timeout=10).json()
    assert body["status"] == "ok"
    assert body["down"] == {}
    assert {"valkey", "postgres", "auth", "projects", "worker", "smtp"} <= set(body["parts"])


def test_every_service_is_its_own_process_on_its_own_port(up: Up) -> None:
    names = ["auth", "projects", "worker", "gateway"]
    pids = {up.part(n)["pid"] for n in names}
    assert len(pids) == len(names)
    for name in names:
        response = httpx.get(f"{up.part(name)['url']}/healthz", timeout=10)
        assert response.status_code == 200, name
    assert "redkit platform" in httpx.get(up.gateway, timeout=10).text


def test_the_url_table_is_printed_without_passwords(up: Up) -> None:
    printed = up.output.read_text()
    assert "gateway" in printed
    assert up.gateway in printed
    password = (up.data_dir / "valkey.password").read_text().strip()
    assert password not in printed
    assert (up.data_dir / "postgres.password").read_text().strip() not in printed


def test_a_hung_service_turns_the_health_503_naming_it_until_it_answers_again(up: Up) -> None:
    auth = up.part("auth")["pid"]
    os.kill(auth, signal.SIGSTOP)
    try:
        response = httpx.get(f"{up.gateway}/healthz", timeout=30)
        assert response.status_code == 503
        body = response.json()
        assert set(body["down"]) == {"auth"}
    finally:
        os.kill(auth, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while httpx.get(f"{up.gateway}/healthz", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the platform did not recover"
        time.sleep(0.2)


def test_sigterm_stops_every_part_and_leaves_no_process_or_port(base: Path) -> None:
    up = _start(base)
    processes = _descendants(up.process.pid)
    ports = [urlsplit(p["url"]).port for p in up.state["parts"]]
    assert None not in ports
    # valkey, postgres (and its own children), auth, projects, worker, gateway
    assert len(processes) >= 6
    assert _stop(up) == 0
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in processes if _alive(pid)] == []
    assert [port for port in ports if port and _port_open(port)] == []
    assert not (up.data_dir / "up.json").exists()
    assert "stopped" in up.output.read_text()


def test_a_role_without_its_environment_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("REDIS_URL", "DATABASE_URL", "REDKIT_PLATFORM_SECRET"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["up", "--role", "auth", "--port", "0"])
    assert result.exit_code == 1
    assert "REDKIT_PLATFORM_SECRET" in result.output
    result = CliRunner().invoke(app, ["up", "--role", "nosuch"])
    assert result.exit_code == 2
