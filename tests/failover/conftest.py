"""Fixtures of the failover tests: a Cluster with replicas and a Sentinel set-up.

Each test gets set-ups of its own (it kills a master in them), started on free ports from
the embedded binary, as the suite's other servers are, and stopped after it (each process
also dies with the test run, see ``die_with_parent``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import ReplicatedCluster, SentinelGroup

FIGURES: dict[str, str] = {}
"""What the failover tests measured (recovery times, jobs lost), printed after the run."""


def _skip_if_external() -> None:
    if os.environ.get("REDIS_URL"):
        pytest.skip("REDIS_URL is set: the failover tests need servers of their own")


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[ReplicatedCluster]:
    """Three masters, each with one replica (``cluster-node-timeout`` 1 s)."""
    _skip_if_external()
    cluster = ReplicatedCluster(tmp_path / "cluster").start()
    FIGURES.setdefault("replicated cluster start", f"{cluster.start_seconds:.2f} s")
    yield cluster
    cluster.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """One master, one replica, three Sentinels (quorum 2, down after 1 s)."""
    _skip_if_external()
    began = time.perf_counter()
    group = SentinelGroup(tmp_path / "sentinel").start()
    FIGURES.setdefault("sentinel set-up start", f"{time.perf_counter() - began:.2f} s")
    yield group
    group.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("failover figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
