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
import typer
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
    proc, url = _start_foreground_server(data_dir)
    try:
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


@pytest.mark.usefixtures("no_redis_url")
def test_a_ctrl_c_right_after_the_url_line_stops_the_server_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The signal arrives the moment the URL line is written (what a script does that reads
    # it and stops the server at once): it must find redkit's handler already installed.
    echo = typer.echo

    def echo_then_interrupt(message: object = None, *args: object, **kwargs: object) -> None:
        echo(message, *args, **kwargs)  # type: ignore[arg-type]
        if isinstance(message, str) and message.startswith("redis://"):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(typer, "echo", echo_then_interrupt)
    before = signal.getsignal(signal.SIGINT)
    result = runner.invoke(app, ["server", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("stopped")
    assert signal.getsignal(signal.SIGINT) is before
    assert not (tmp_path / "data" / "server.json").exists()


def _start_foreground_server(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "redkit.cli", "server", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "COLUMNS": "120"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline().strip()
        if line.startswith("redis://"):
            return proc, line
    proc.kill()
    raise AssertionError("no URL line printed")


@pytest.mark.usefixtures("no_redis_url")
def test_a_foreground_server_stopped_from_outside_exits_0_and_says_why(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc, url = _start_foreground_server(data_dir)
    try:
        user = redis.Redis.from_url(url, client_name="redkit-user:424242")
        user.ping()
        stop = runner.invoke(app, ["server", "--stop", "--data-dir", str(data_dir)])
        assert stop.exit_code == 0, stop.output
        assert "stopped the embedded server" in stop.output
        # The foreground server itself and the connection named like a user process.
        assert "424242" in stop.output
        assert str(proc.pid) in stop.output
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "shut down from outside" in out
        assert "error" not in err
        user.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.usefixtures("no_redis_url")
def test_stop_without_a_server_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["server", "--stop", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "no embedded server runs in" in result.output


def test_help_shows_flags_without_a_type_and_values_with_a_metavar() -> None:
    result = runner.invoke(app, ["jobs", "list", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert "--url" in result.output
    assert "URL" in result.output
    for command in (["--help"], ["server", "--help"], ["cache", "stats", "--help"]):
        assert "<bool>" not in runner.invoke(app, command, env={"COLUMNS": "120"}).output


def test_the_cli_reads_the_namespace_from_a_dot_env_file(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = f"dotenv{os.getpid()}"
    monkeypatch.delenv("REDKIT_NAMESPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"REDIS_URL={redis_url}\nREDKIT_NAMESPACE={namespace}\n")
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["namespace"] == namespace
    # An option still wins over the file.
    other = runner.invoke(app, ["info", "--json", "-n", "other"])
    assert json.loads(other.stdout)["namespace"] == "other"
