"""``python -m benchmarks --html FILE``: the benchmark results as one offline page (the
report extra's Plotly page shell): per model, each contender's speed-up and metric."""

from __future__ import annotations

import os
from pathlib import Path

from onnxcomp.report.page import Page


def _speedup(base: dict | None, row: dict | None, threads: int) -> float | None:
    b = (base or {}).get(f"latency_{threads}t") or {}
    r = (row or {}).get(f"latency_{threads}t") or {}
    if not b.get("median_ms") or not r.get("median_ms"):
        return None
    return b["median_ms"] / r["median_ms"]


def _bars(page: Page, title: str, models: list[str], series: dict[str, list], y: str) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, values in series.items():
        fig.add_trace(go.Bar(name=name, x=models, y=values))
    fig.update_layout(title=title, barmode="group", yaxis_title=y, legend_title="contender")
    page.figure(fig)


def real_figures(page: Page, real: list[dict]) -> None:
    entries = [e for e in real if not e.get("skipped")]
    if not entries:
        return
    page.heading("Real exported models")
    models = [e["model"] for e in entries]
    names = sorted({n for e in entries for n in e.get("contenders", {})})
    speed = {
        n: [_speedup(e.get("fp32"), e["contenders"].get(n), 1) for e in entries] for n in names
    }
    _bars(page, "speed-up vs fp32, 1 thread (higher is better)", models, speed, "x fp32")
    drop = {n: [(e["contenders"].get(n) or {}).get("drop") for e in entries] for n in names}
    _bars(page, "task-metric drop vs fp32 (lower is better)", models, drop, "points / 1")
    rows = [[e["model"], e["metric"], f"{e['fp32']['metric']:.4f}"] for e in entries]
    page.table(["model", "metric", "fp32"], rows)


def zoo_figures(page: Page, results: list[dict], contenders: list[str]) -> None:
    entries = [e for e in results if e.get("contenders")]
    if not entries:
        return
    page.heading("Model zoo")
    models = [e["model"] for e in entries]
    speed = {
        n: [_speedup(e.get("fp32"), e["contenders"].get(n), 1) for e in entries] for n in contenders
    }
    _bars(page, "speed-up vs fp32, 1 thread", models, speed, "x fp32")
    cos = {
        n: [((e["contenders"].get(n) or {}).get("fidelity") or {}).get("cosine") for e in entries]
        for n in contenders
    }
    _bars(page, "output cosine to fp32", models, cos, "cosine")


def write_html(payload: dict, path: str | os.PathLike) -> Path:
    page = Page("onnxcomp benchmarks", f"{payload.get('date', '')}: {payload.get('command', '')}")
    for note in payload.get("notes", []):
        page.text(f"note: {note}")
    real_figures(page, payload.get("real") or [])
    zoo_figures(page, payload.get("results") or [], payload.get("contenders") or [])
    return page.write(path)
