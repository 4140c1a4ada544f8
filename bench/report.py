"""Writing results: JSON (everything), Markdown (the table), PNG (ratios at a glance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.harness import Result


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        "# redkit benchmark",
        "",
        f"Server: {meta['server']} ({meta['url']}), Python {meta['machine']['python']}, "
        f"{meta['runs']} runs each (median), {meta['date']}.",
        "",
        "Ratio = redkit / peer for rates, peer / redkit for latencies: above 1 redkit wins.",
        "",
        "| section | figure | unit | redkit | peer | peer value | ratio |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for r in results:
        ratios = r.ratios()
        if not r.peers:
            lines.append(f"| {r.section} | {r.name} | {r.unit} | {_fmt(r.value)} | - | - | - |")
        for peer, data in r.peers.items():
            lines.append(
                f"| {r.section} | {r.name} | {r.unit} | {_fmt(r.value)} | {peer} | "
                f"{_fmt(data['value'])} | {ratios.get(peer, 0):.2f} |"
            )
    return "\n".join(lines) + "\n"


def chart(results: list[Result], path: Path) -> bool:
    """A horizontal bar per (figure, peer) ratio; False if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, values = [], []
    for r in results:
        for peer, ratio in r.ratios().items():
            labels.append(f"{r.name}\nvs {peer}")
            values.append(ratio)
    if not values:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(values) + 1.5))
    colors = ["#2e7d32" if v >= 1 else "#c62828" for v in values]
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=1)
    # Ratios run from ~0.5 to ~100: a log axis keeps both ends readable.
    ax.set_xscale("log")
    ax.set_xlabel("ratio, log scale (above 1: redkit is better)")
    ax.set_title("redkit vs peers")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: list[Result], meta: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        **meta,
        "figures": [
            {**r.jsonl(), "peers": r.peers, "ratios": r.ratios(), "note": r.note} for r in results
        ],
    }
    written = [out_dir / "results.json", out_dir / "results.md"]
    written[0].write_text(json.dumps(data, indent=2) + "\n")
    written[1].write_text(markdown(results, meta))
    if chart(results, out_dir / "results.png"):
        written.append(out_dir / "results.png")
    return written
