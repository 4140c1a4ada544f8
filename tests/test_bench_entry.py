"""``python -m bench`` starts in the development environment too (.venv, without the peers)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_help_works_without_the_peers_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert ".venv-bench" in done.stdout
    assert "--save" in done.stdout


@pytest.fixture(autouse=True)
def _bench_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))


def test_every_comparison_registers_and_a_missing_peer_is_left_out() -> None:
    import bench.__main__ as entry
    from bench.harness import REGISTRY

    entry._register_comparisons()
    sections = {c.section for c in REGISTRY}
    assert {"ratelimit", "jobs", "cache", "cluster", "gateway", "sync-api"} <= sections
    limits_peers = [c for c in REGISTRY if "limits" in c.peers]
    if importlib.util.find_spec("limits") is None:
        assert limits_peers == []
        assert "limits" in entry._missing_peers()
    else:
        assert limits_peers


def test_a_run_writes_its_report_to_an_ignored_folder_unless_told_to_save() -> None:
    import bench.__main__ as entry

    assert entry._args([]).out == ROOT / "artifacts" / "bench"
    assert entry._args(["--save"]).out == ROOT / "bench"
    assert entry._args(["--out", "x"]).out == Path("x")
    assert "artifacts/" in (ROOT / ".gitignore").read_text().splitlines()
