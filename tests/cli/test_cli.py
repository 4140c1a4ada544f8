"""The ``redkit`` command line: --version, info, server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

import redkit
from redkit.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"redkit {redkit.__version__}"


@pytest.mark.cluster
def test_info_json_describes_the_server(redis_url: str, server_kind: str) -> None:
    client = redis.Redis.from_url(redis_url) if server_kind == "standalone" else None
    if client is not None:
        client.set("cliinfo:a", 1)
    result = runner.invoke(app, ["info", "--json", "--url", redis_url, "-n", "cliinfo"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["namespace"] == "cliinfo"
    assert data["mode"] == ("cluster" if server_kind == "cluster" else data["mode"])
    assert data["server"] in ("valkey", "redis")
    assert data["used_memory"] > 0
    if client is not None:
        assert data["keys_in_namespace"] == 1
        client.delete("cliinfo:a")


def test_info_table_is_readable(redis_url: str) -> None:
    result = runner.invoke(app, ["info", "--url", redis_url])
    assert result.exit_code == 0, result.output
    for label in ("server", "mode", "memory", "keys in namespace"):
        assert label in result.stdout


def test_info_against_a_dead_server_is_one_clear_line_and_exit_1() -> None:
    result = runner.invoke(app, ["info", "--url", "redis://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "Traceback" not in result.output


def test_info_with_a_bad_url_is_a_clear_error() -> None:
    result = runner.invoke(app, ["info", "--url", "http://nope"])
    assert result.exit_code == 1
    assert "unsupported URL scheme" in result.output


@pytest.mark.usefixtures("no_redis_url")
def test_server_runs_in_the_foreground_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "redkit.cli", "server", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "COLUMNS": "120"},
    )
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if line.startswith("redis://"):
                url = line
                break
        assert url, "no URL line printed"
        client = redis.Redis.from_url(url)
        assert client.ping()
        pid = json.loads((data_dir / "server.json").read_text())["pid"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
