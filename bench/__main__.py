"""``python -m bench``: run every registered comparison; see ``--help``.

Without ``--redis-url`` it starts one embedded Valkey (in a temporary data directory, with the
embedded defaults, AOF on) and runs redkit and every peer against it. With ``--redis-url URL
--jsonl`` it runs redkit's figures alone against that server and prints one JSON line each.

The peers are installed in ``.venv-bench`` only (``make bench`` creates it); in any other
environment (``.venv``) the missing peers are skipped and redkit's figures still run. The
report goes to ``artifacts/bench/`` (ignored by git); ``--save`` updates the committed
``bench/results.*`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import importlib.util
import json
import logging
import os
import pkgutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import redkit
from bench.harness import REGISTRY, Context, Result, machine, run_comparison
from bench.report import write
from redkit.embedded import EmbeddedValkey

console = Console(stderr=True)
SERVER: dict[str, str] = {}
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parent / "artifacts" / "bench"
"""Default report folder: ignored by git, so a run never overwrites the committed results."""
PEERS = (
    "arq",
    "rq",
    "saq",
    "limits",
    "cashews",
    "redis_lock",
    "pottery",
    "broadcaster",
    "starsessions",
    "slowapi",
    "fastapi_cache",
    "taskiq_redis",
    "dramatiq",
    "huey",
    "django_redis",
    "flask_session",
    "django_ratelimit",
    "celery",
)
"""Importable names of the peer packages (bench/requirements.txt)."""


def _register_comparisons() -> None:
    """Import every module of this package except the machinery: each registers its
    comparisons. Done after the arguments are parsed, so ``--help`` works anywhere."""
    for module in pkgutil.iter_modules([str(HERE)]):
        if module.name not in ("harness", "report", "__main__"):
            importlib.import_module(f"bench.{module.name}")


def _missing_peers() -> list[str]:
    return [name for name in PEERS if importlib.util.find_spec(name) is None]


def _quiet_teardown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Peers leave tasks and connections behind when their clients close (a reader task
    that dies with its connection, a future nobody awaits): asyncio would print each with a
    traceback at exit. They say nothing about the figures, so they go to the debug log."""
    logging.getLogger("bench.teardown").debug(
        "%s", context.get("message"), exc_info=context.get("exception")
    )


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--redis-url", help="measure against this server (default: embedded)")
    parser.add_argument("--jsonl", action="store_true", help="redkit's figures only, JSON lines")
    parser.add_argument("--runs", type=int, default=5, help="runs per side (median is kept)")
    parser.add_argument("--quick", action="store_true", help="fewer operations per run")
    parser.add_argument("--only", help="run only figures whose section or name contains this")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="leave CPU placement to the scheduler (default: the embedded server gets a CPU of "
        "its own, the benchmark the others)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"report folder (default: {ARTIFACTS.relative_to(HERE.parent)}/, ignored by git)",
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help="write the report to bench/ (the committed results.json, .md, .png)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = HERE if args.save else ARTIFACTS
    return args


async def _main(args: argparse.Namespace, url: str) -> list[Result]:
    comps = [c for c in REGISTRY if not args.only or args.only in c.section or args.only in c.name]
    results: list[Result] = []
    asyncio.get_running_loop().set_exception_handler(_quiet_teardown)
    async with redkit.connect(url, "bench") as rk:
        ctx = Context(url=url, rk=rk, scale=0.2 if args.quick else 1.0)
        info = await rk.server_info(count_keys=False)
        for comp in comps:
            if not args.jsonl:
                console.print(f"[cyan]{comp.section}[/cyan] {comp.name} ...")
            result = await run_comparison(comp, ctx, args.runs, with_peers=not args.jsonl)
            results.append(result)
            if args.jsonl:
                print(json.dumps(result.jsonl()), flush=True)
        SERVER["name"] = f"{info.server} {info.version}"
    return results


def _table(results: list[Result]) -> Table:
    table = Table(title="redkit vs peers (ratio > 1: redkit better)")
    for col in ("section", "figure", "redkit", "peer", "peer value", "ratio"):
        table.add_column(
            col, justify="right" if col in ("redkit", "peer value", "ratio") else "left"
        )
    for r in results:
        for peer, ratio in r.ratios().items():
            style = "green" if ratio >= 0.9 else "red"
            table.add_row(
                r.section,
                r.name,
                f"{r.value:,.0f} {r.unit}",
                peer,
                f"{r.peers[peer]['value']:,.0f}",
                f"[{style}]{ratio:.2f}[/{style}]",
            )
    return table


def _pin(server_pid: int) -> None:
    """Give the server a CPU of its own and keep this process off it.

    Left to the scheduler, the server and this process share one CPU in some runs and not in
    others (this machine has two), and the two placements give different figures: sharing,
    a reply needs no cross-CPU wake-up, but every microsecond of server work is taken from the
    client. A server on its own core, as in production, makes the runs comparable.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    server_cpu, own = {cpus[-1]}, set(cpus[:-1])
    try:
        # Every thread of the server (its main thread and its background I/O threads).
        for tid in os.listdir(f"/proc/{server_pid}/task"):
            os.sched_setaffinity(int(tid), server_cpu)
    except OSError as exc:  # not Linux, or not allowed: run unpinned, and say so
        console.print(f"[yellow]not pinned: {exc}[/yellow]")
        return
    os.sched_setaffinity(0, own)  # threads started later (to_thread peers) inherit it
    console.print(f"server pinned to CPU {cpus[-1]}, benchmark to CPU(s) {sorted(own)}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    _register_comparisons()
    # SAQ warns when its worker is stopped with tasks in flight, which is how its side ends.
    logging.getLogger("saq").setLevel(logging.ERROR)
    # taskiq logs its listener's cancelled BRPOP (how its side ends) with a traceback.
    logging.getLogger("taskiq").setLevel(logging.CRITICAL)
    missing = _missing_peers()
    if missing and not args.jsonl:
        console.print(
            f"[yellow]peers not installed here, skipped: {', '.join(missing)}[/yellow] "
            "(the bench's environment is .venv-bench: `make bench` creates it)"
        )
    handle: EmbeddedValkey | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.redis_url:
        url = args.redis_url
    else:
        tmp = tempfile.TemporaryDirectory(prefix="redkit-bench-")
        handle = EmbeddedValkey.acquire(Path(tmp.name) / "data")
        url = handle.url
        if args.pin:
            _pin(handle.pid)
    try:
        results = asyncio.run(_main(args, url))
    finally:
        if handle is not None:
            handle.release()
        if tmp is not None:
            tmp.cleanup()
    if args.jsonl:
        return 0
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "url": "embedded" if handle else url,
        "server": SERVER.get("name", "?"),
        "runs": args.runs,
        "machine": machine(),
    }
    console.print(_table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in write(results, meta, args.out):
        console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
