"""Every Python example of the README runs as written, each in a fresh process: scripts with
``python``, apps started and stopped under Starlette's ``TestClient``, tests with ``pytest``.
The FastAPI example is, line for line, the service the web tests run end to end."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

import redkit

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# A block right after `<!-- fragment -->` is a piece of a larger program, not run here.
BLOCK = re.compile(r"(<!-- fragment -->\n)?```python\n(.*?)```", re.S)
APP = re.compile(r"^app = (FastAPI|Starlette)\(", re.M)

START_APP = """
import warnings
warnings.simplefilter("ignore")  # Starlette 1.x prefers httpx2 for its TestClient
from starlette.testclient import TestClient
import example
with TestClient(example.app):
    pass
"""


def examples() -> list[tuple[int, str]]:
    text = README.read_text()
    found = []
    for match in BLOCK.finditer(text):
        if not match[1]:
            found.append((text.count("\n", 0, match.start()) + 1, match[2]))
    return found


def service_code() -> str:
    source = (ROOT / "tests" / "web" / "service.py").read_text()
    return source[source.index("from typing import Any") :]


def test_the_fastapi_example_is_the_service_the_web_tests_run() -> None:
    apps = [code for _, code in examples() if APP.search(code)]
    assert apps, "the README has no FastAPI example"
    assert apps[0] == service_code()


def test_the_readme_speaks_to_someone_who_never_saw_a_brief() -> None:
    text = README.read_text().lower()
    assert "brief" not in text
    assert "the platform's" not in text


@pytest.mark.parametrize(("line", "code"), examples(), ids=[f"line {n}" for n, _ in examples()])
async def test_the_readme_example_runs_as_written(
    line: int, code: str, rk: redkit.Redkit, redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "myapp.py").write_text(service_code())  # what the README names myapp.py
    (tmp_path / "example.py").write_text(code)
    if "def test_" in code:
        argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "example.py"]
    elif APP.search(code):
        argv = ["-c", START_APP]
    else:
        argv = ["example.py"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDKIT_")}
    env |= {"REDIS_URL": redis_url, "REDKIT_NAMESPACE": rk.namespace, "PYTHONPATH": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"README line {line}: the example did not finish") from None
    assert process.returncode == 0, f"README line {line}:\n{output.decode(errors='replace')}"
