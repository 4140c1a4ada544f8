"""The embedded server: start, reuse (in and across processes), stop with its last user, AOF."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import redkit
from redkit.embedded import EmbeddedValkey, ValkeyProcess, valkey_binary
from servers import TEST_CONFIG

pytestmark = pytest.mark.usefixtures("no_redis_url")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def handles() -> Iterator[list[EmbeddedValkey]]:
    """Handles a test acquired; released afterwards so no server outlives its test."""
    acquired: list[EmbeddedValkey] = []
    yield acquired
    for handle in acquired:
        handle.release()


def _user_script(data_dir: Path, hold: bool) -> str:
    """A second process that connects to the embedded server of ``data_dir``."""
    return textwrap.dedent(
        f"""
        import asyncio, json, sys
        import redkit

        async def main():
            rk = await redkit.connect(data_dir={str(data_dir)!r})
            print(json.dumps({{"pid": rk.embedded.pid, "port": rk.embedded.port,
                              "started_here": rk.embedded.started_here}}), flush=True)
            await rk.close()
            if {hold!r}:
                sys.stdin.readline()   # hold the server until told to go

        asyncio.run(main())
        """
    )


def _spawn_user(data_dir: Path, hold: bool) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _user_script(data_dir, hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the child process printed nothing"
    return proc, json.loads(line)


async def test_connect_without_url_starts_an_embedded_server_with_aof(
    data_dir: Path, handles: list[EmbeddedValkey]
) -> None:
    async with redkit.connect(data_dir=data_dir) as rk:
        assert rk.embedded is not None
        handles.append(rk.embedded)
        assert rk.embedded.started_here
        assert rk.url.startswith("redis://127.0.0.1:")
        assert await rk.redis.config_get("appendonly") == {"appendonly": "yes"}
        assert (await rk.redis.config_get("dir"))["dir"] == str(data_dir.resolve())
        state = json.loads((data_dir / "server.json").read_text())
        assert state["pid"] == rk.embedded.pid
        assert state["port"] == rk.embedded.port
        pid = rk.embedded.pid
    # Closing the client leaves the server to the process; release() (or exit) stops it.
    assert _alive(pid)
    handles.pop().release()
    assert _wait_dead(pid)
    assert not (data_dir / "server.json").exists()


async def test_a_second_connect_in_one_process_shares_the_server(
    data_dir: Path, handles: list[EmbeddedValkey]
) -> None:
    async with redkit.connect(data_dir=data_dir) as a, redkit.connect(data_dir=data_dir) as b:
        assert a.embedded is not None
        assert a.embedded is b.embedded
        handles.append(a.embedded)
        await a.redis.set("shared", 1)
        assert await b.redis.get("shared") == b"1"


async def test_another_process_reuses_the_running_server(
    data_dir: Path, handles: list[EmbeddedValkey]
) -> None:
    handle = EmbeddedValkey.acquire(data_dir)
    handles.append(handle)
    proc, seen = _spawn_user(data_dir, hold=False)
    assert proc.wait(10) == 0
    assert seen == {"pid": handle.pid, "port": handle.port, "started_here": False}
    # The other process left; we still use the server, so it must still run.
    assert _alive(handle.pid)
    redis.Redis(port=handle.port).ping()


def test_the_server_lives_until_its_last_user_leaves(data_dir: Path) -> None:
    # We start it; a second process shares it; we leave first: the server must stay for it.
    ours = EmbeddedValkey.acquire(data_dir)
    proc, seen = _spawn_user(data_dir, hold=True)
    assert seen["pid"] == ours.pid
    ours.release()
    time.sleep(0.1)
    assert _alive(ours.pid), "stopped while another process still used it"
    redis.Redis(port=ours.port).ping()
    # The other process, which did not start it, is the last user: its exit stops the server.
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(10) == 0
    assert _wait_dead(ours.pid), "the last user's exit did not stop the server"


def test_a_user_killed_with_sigkill_stops_counting_as_a_user(data_dir: Path) -> None:
    ours = EmbeddedValkey.acquire(data_dir)
    proc, _ = _spawn_user(data_dir, hold=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.1)  # let the server notice the closed connection
    ours.release()
    assert _wait_dead(ours.pid), "a dead process was still counted as a user"


def test_python_c_connect_in_an_empty_folder_leaves_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDKIT_DATA_DIR")}
    result = subprocess.run(
        [sys.executable, "-c", "import asyncio, redkit; asyncio.run(redkit.connect())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    log = (tmp_path / ".redkit" / "data" / "valkey.log").read_text()
    pids = {int(p) for p in re.findall(r"pid=(\d+), just started", log)}
    assert len(pids) == 1
    assert _wait_dead(pids.pop())
    assert not (tmp_path / ".redkit" / "data" / "server.json").exists()


def test_aof_keeps_data_across_a_restart_of_the_embedded_server(data_dir: Path) -> None:
    first = EmbeddedValkey.acquire(data_dir)
    client = redis.Redis(port=first.port)
    client.set("rk:job:1", "queued")
    client.close()
    first.release()  # SIGTERM: the server flushes its AOF and exits
    assert _wait_dead(first.pid)

    second = EmbeddedValkey.acquire(data_dir)
    try:
        assert second.pid != first.pid
        assert redis.Redis(port=second.port).get("rk:job:1") == b"queued"
    finally:
        second.release()


def test_a_stale_state_file_is_replaced(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data_dir / "server.json").write_text(
        json.dumps({"pid": dead.pid, "host": "127.0.0.1", "port": 1})
    )
    handle = EmbeddedValkey.acquire(data_dir)
    try:
        assert handle.started_here
        assert redis.Redis(port=handle.port).ping()
    finally:
        handle.release()


def test_a_crashed_embedded_server_is_restarted_by_the_next_acquire(data_dir: Path) -> None:
    first = EmbeddedValkey.acquire(data_dir)
    assert first.process is not None
    first.process.kill()
    second = EmbeddedValkey.acquire(data_dir)
    try:
        assert second is not first
        assert second.started_here
        assert redis.Redis(port=second.port).ping()
    finally:
        second.release()


def test_stop_directory_stops_a_server_started_elsewhere(data_dir: Path) -> None:
    proc, seen = _spawn_user(data_dir, hold=True)
    try:
        assert EmbeddedValkey.stop_directory(data_dir)
        assert _wait_dead(int(str(seen["pid"])))
        assert not EmbeddedValkey.stop_directory(data_dir)
    finally:
        proc.kill()
        proc.wait(10)


def test_a_start_failure_reports_the_server_log(tmp_path: Path) -> None:
    with pytest.raises(redkit.EmbeddedServerError, match="log"):
        EmbeddedValkey.acquire(tmp_path / "bad", config={"maxmemory": "not-a-size"})


async def test_an_app_follows_its_embedded_server_to_the_next_one_of_its_directory(
    data_dir: Path,
) -> None:
    # `redkit server --stop` under a running app, then another process starts the
    # directory's next server (on a port of its own): the app's calls work again there.
    async with redkit.connect(data_dir=data_dir, namespace="follow") as rk:
        assert rk.embedded is not None
        job = await rk.queue("q").enqueue("f", {"n": 1})
        report = EmbeddedValkey.stop_directory(data_dir)
        assert report is not None
        assert report.users == (os.getpid(),)
        proc, seen = _spawn_user(data_dir, hold=True)
        try:
            assert seen["started_here"]
            found = None
            for _ in range(5):  # the first call may meet the dropped connection
                try:
                    found = await rk.queue("q").get(job.id)
                    break
                except redkit.ConnectionLost:
                    continue
            assert found is not None  # the AOF kept it
            assert found.payload == {"n": 1}
            client_ports = {
                int(str(entry["laddr"]).rpartition(":")[2])
                for entry in await rk.redis.client_list()
            }
            assert client_ports == {int(str(seen["port"]))}
            assert rk.embedded.port == seen["port"]
            assert rk.url.endswith(f":{seen['port']}")
        finally:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.close()
            proc.wait(10)
            EmbeddedValkey.acquire(data_dir).release()
    assert not (data_dir / "server.json").exists()


async def test_an_app_whose_embedded_server_was_stopped_starts_the_next_one_itself(
    data_dir: Path,
) -> None:
    async with redkit.connect(data_dir=data_dir, namespace="follow") as rk:
        assert rk.embedded is not None
        old_pid = rk.embedded.pid
        await rk.queue("q").enqueue("f", job_id="kept")
        assert EmbeddedValkey.stop_directory(data_dir) is not None
        found = None
        try:
            for _ in range(5):  # the first call may meet the dropped connection
                try:
                    found = await rk.queue("q").get("kept")
                    break
                except redkit.ConnectionLost:
                    continue
            assert found is not None
            state = json.loads((data_dir / "server.json").read_text())
            assert state["pid"] != old_pid
            assert _alive(state["pid"])
        finally:
            EmbeddedValkey.acquire(data_dir).release()
    assert not (data_dir / "server.json").exists()


def test_a_server_process_runs_the_binary_it_is_given(tmp_path: Path) -> None:
    # The server matrix runs Redis 6.2 and 7.0 this way; a copy under another name stands in.
    binary = tmp_path / "bin" / "redis-server"
    binary.parent.mkdir()
    shutil.copy2(valkey_binary(), binary)
    server = ValkeyProcess(tmp_path / "data", config=TEST_CONFIG, binary=binary).start()
    try:
        assert server.pid is not None
        assert Path(f"/proc/{server.pid}/exe").resolve() == binary.resolve()
        assert redis.Redis(host=server.host, port=server.port).ping()
    finally:
        server.stop()
    # A start failure names the binary that failed, not the embedded one.
    broken = ValkeyProcess(tmp_path / "bad", config={"maxmemory": "x"}, binary=binary)
    with pytest.raises(redkit.EmbeddedServerError, match=r"^redis-server exited"):
        broken.start()
