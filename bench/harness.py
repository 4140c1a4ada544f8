"""The benchmark harness: comparisons, runs, medians, ratios, and the report files.

A :class:`Comparison` measures one figure for redkit and for each peer, in the same process,
against the same server, with runs interleaved (redkit, peer, redkit, peer, ...) so that drift
of the machine hits both alike. Each side's function performs the work, checks that the work
was really done (a benchmark that silently did nothing would report a great number), and
returns its rate. The figure is the median of the runs.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redkit

Runner = Callable[["Context"], Awaitable[float]]


class WorkNotDone(AssertionError):
    """A benchmark side did not do the work it claims to have measured."""


def verify(condition: bool, message: str) -> None:
    if not condition:
        raise WorkNotDone(message)


@dataclass
class Context:
    """What every benchmark gets: the server URL and a connected Redkit."""

    url: str
    rk: redkit.Redkit
    scale: float = 1.0
    """Multiplies operation counts; ``--quick`` sets it below 1."""

    def n(self, base: int) -> int:
        return max(10, int(base * self.scale))


@dataclass
class Comparison:
    section: str
    name: str
    unit: str
    redkit: Runner
    peers: dict[str, Runner] = field(default_factory=dict)
    higher_is_better: bool = True
    note: str = ""


REGISTRY: list[Comparison] = []


def comparison(
    section: str, name: str, unit: str = "ops/s", *, higher_is_better: bool = True, note: str = ""
) -> Callable[[Runner], Comparison]:
    """Register ``fn`` as redkit's side of a figure; add peers with ``.peers[name] = fn``."""

    def register(fn: Runner) -> Comparison:
        comp = Comparison(section, name, unit, fn, higher_is_better=higher_is_better, note=note)
        REGISTRY.append(comp)
        return comp

    return register


@dataclass
class Result:
    section: str
    name: str
    unit: str
    value: float
    runs: list[float]
    peers: dict[str, dict[str, Any]]
    higher_is_better: bool
    note: str

    def ratios(self) -> dict[str, float]:
        """redkit / peer for rates (and peer / redkit for latencies): > 1 means redkit wins."""
        out = {}
        for peer, data in self.peers.items():
            if data["value"] > 0 and self.value > 0:
                out[peer] = (
                    self.value / data["value"]
                    if self.higher_is_better
                    else data["value"] / self.value
                )
        return out

    def jsonl(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "value": round(self.value, 3),
            "unit": self.unit,
            "runs": [round(r, 3) for r in self.runs],
        }


async def run_comparison(
    comp: Comparison, ctx: Context, runs: int, *, with_peers: bool = True
) -> Result:
    sides: dict[str, Runner] = {"redkit": comp.redkit}
    if with_peers:
        sides.update(comp.peers)
    values: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for run in range(runs):
        for side in order if run % 2 == 0 else reversed(order):
            values[side].append(await sides[side](ctx))
    peers = {
        peer: {"value": statistics.median(vals), "runs": vals}
        for peer, vals in values.items()
        if peer != "redkit"
    }
    return Result(
        comp.section,
        comp.name,
        comp.unit,
        statistics.median(values["redkit"]),
        values["redkit"],
        peers,
        comp.higher_is_better,
        comp.note,
    )


async def timed(n: int, op: Callable[[], Awaitable[Any]]) -> float:
    """Run ``op`` ``n`` times in sequence; return operations per second."""
    began = time.perf_counter()
    for _ in range(n):
        await op()
    return n / (time.perf_counter() - began)


def machine() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
