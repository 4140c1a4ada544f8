"""Run apps the way users do: ``python -m uvicorn module:app`` in a process of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from redkit.embedded import find_free_port

TESTS = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    url: str
    process: asyncio.subprocess.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDKIT_")}
    env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


async def _start(
    target: str, env: Mapping[str, str], workdir: Path, port: int, *options: str
) -> tuple[asyncio.subprocess.Process, Path]:
    log = workdir / f"uvicorn-{port}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            *options,
            cwd=workdir,
            env=_env(env),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    return process, log


@asynccontextmanager
async def uvicorn_app(
    target: str,
    env: Mapping[str, str],
    workdir: Path,
    *options: str,
    stop: signal.Signals = signal.SIGTERM,
) -> AsyncIterator[Served]:
    """``uvicorn target options...`` on a free port, until it answers; ``stop`` (SIGTERM) on
    the way out, after which it must shut down cleanly within 30 s (uvicorn re-raises the
    signal once it has, so the exit code is 0 or minus the signal)."""
    port = find_free_port()
    process, log = await _start(target, env, workdir, port, *options)
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=2) as http:
            for _ in range(300):  # bounded: 30 s
                if process.returncode is not None:
                    raise AssertionError(f"uvicorn exited:\n{served.output()}")
                try:
                    await http.get("/openapi.json")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"uvicorn did not start:\n{served.output()}")
        yield served
    finally:
        code = process.returncode
        if code is None:
            process.send_signal(stop)
            try:
                code = await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                code = await process.wait()
    assert code in (0, -stop), served.output()
    assert "Application shutdown complete" in served.output()


async def failed_start(target: str, env: Mapping[str, str], workdir: Path) -> tuple[int, str]:
    """Run ``uvicorn target``, which must exit by itself; its exit code and output."""
    port = find_free_port()
    process, log = await _start(target, env, workdir, port)
    try:
        code = await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"uvicorn kept running:\n{log.read_text()}") from None
    return code, log.read_text(errors="replace")
