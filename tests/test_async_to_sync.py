"""tools/async_to_sync.py: the rewrite, the shared definitions, and the checks CI relies on."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_to_sync", ROOT / "tools/async_to_sync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

SOURCE = """
import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from redkit._codegen import IS_ASYNC, async_only


@dataclass
class Reply:
    value: int


def parse(raw: bytes) -> Reply:
    return Reply(int(raw))


async def read(client: Redis) -> Reply:
    if IS_ASYNC:
        await asyncio.sleep(0)
    else:
        print("sync")
    async with client.pipeline() as pipe:
        raw = await pipe.get("k")
    return parse(raw)


@async_only
async def only_async() -> None:
    await asyncio.sleep(1)
"""


def _convert(source: str, rules: object | None = None) -> tuple[str, set[str]]:
    unit = tool.Unit("src/redkit/example.py", "src/redkit/_sync/example.py")
    module, shared = tool.convert(unit, source, rules or tool.Rules(), {})
    return ast.unparse(module), shared


def test_the_rewrite_drops_async_keeps_the_sync_branch_and_shares_untouched_code() -> None:
    text, shared = _convert(SOURCE)
    assert "await" not in text
    assert "async " not in text
    assert "only_async" not in text  # @async_only
    assert "print('sync')" in text  # the else branch of `if IS_ASYNC:`
    assert "asyncio.sleep" not in text
    assert "from redis import Redis" in text
    assert "with client.pipeline() as pipe" in text
    # Untouched definitions are the async module's objects, imported, not copied.
    assert "from redkit.example import Reply as Reply" in text
    assert "from redkit.example import parse as parse" in text
    assert shared >= {"Reply", "parse"}
    assert "def read(client: Redis) -> Reply" in text


def test_an_asyncio_call_without_a_sync_twin_stops_the_generation() -> None:
    with pytest.raises(tool.GenerationError, match=r"asyncio.wait_for has no sync twin"):
        _convert("import asyncio\n\nasync def f() -> None:\n    await asyncio.wait_for(g(), 1)\n")


def test_a_definition_naming_a_generated_one_is_generated_too() -> None:
    source = (
        "from redkit.client import Redkit\n\n"
        "def namespace_of(rk: Redkit) -> str:\n    return rk.namespace\n"
    )
    text, shared = _convert(source)
    assert "def namespace_of" in text  # it names the sync Redkit: not the async object
    assert "namespace_of" not in shared
    assert "from redkit._sync.client import Redkit" in text


def _copy_project(tmp_path: Path) -> Path:
    """A scratch copy of the project's sources (ruff sorts imports by what exists)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for directory in ("src", "tests"):
        shutil.copytree(ROOT / directory, tmp_path / directory, ignore=skip)
    return tmp_path


def test_check_fails_on_a_stale_module_a_stray_file_and_an_unused_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_project(tmp_path)
    monkeypatch.setattr(tool, "ROOT", root)
    assert tool.main(["--check"]) == 0  # as `make lint` finds the committed tree

    generated = root / "src/redkit/_sync/sessions/store.py"
    committed = generated.read_text()
    generated.write_text(committed.replace("def revoke_all(", "def revoke_every("))
    assert tool.main(["--check"]) == 1
    assert "revoke_every" in capsys.readouterr().out  # the diff shows the difference
    assert tool.main([]) == 0  # regenerating repairs it
    assert generated.read_text() == committed

    stray = root / "src/redkit/_sync/by_hand.py"
    stray.write_text("x = 1\n")
    assert tool.main(["--check"]) == 1
    assert "by_hand.py" in capsys.readouterr().err
    stray.unlink()

    monkeypatch.setitem(tool.NAMES, "__anext__", "__next__")
    assert tool.main(["--check"]) == 2
    assert "name __anext__" in capsys.readouterr().err
