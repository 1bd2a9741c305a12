"""The auto page: every trial as a point (size or latency against metric drop) with the
budget line, the chosen point and the best global setting; then each layer's chosen
setting over its measured sensitivity."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from onnxcomp.auto.report import verification_lines
from onnxcomp.report.page import BAD, COMPRESSED, NEUTRAL, ORIGINAL, Page

if TYPE_CHECKING:
    from onnxcomp.auto import AutoResult
    from onnxcomp.auto.trials import TrialResult

_STAGE_COLORS = ["#4C78A8", "#72B7B2", "#54A24B", "#B279A2", "#9D755D", "#EECA3B"]


def _summary(t: TrialResult, ladder: list[str]) -> str:
    counts: dict[str, int] = {}
    for rung in t.config.values():
        if rung:
            counts[ladder[rung]] = counts.get(ladder[rung], 0) + 1
    return ", ".join(f"{n}x {k}" for k, n in sorted(counts.items())) or "all float"


def _pareto(r: AutoResult, x_of, x_title: str, trials: list[TrialResult], original_x: float):
    import plotly.graph_objects as go

    fig = go.Figure()
    stages = list(dict.fromkeys(t.stage for t in trials))
    for i, stage in enumerate(stages):
        ts = [t for t in trials if t.stage == stage]
        fig.add_trace(
            go.Scatter(
                x=[x_of(t) for t in ts], y=[t.drop for t in ts], mode="markers", name=stage,
                marker={"color": _STAGE_COLORS[i % len(_STAGE_COLORS)], "size": 8, "opacity": 0.8},
                hovertext=[f"trial {t.id} ({t.stage}): {_summary(t, r.ladder)}<br>"
                           f"drop {t.drop:.4f}, {t.bytes:,} B" for t in ts],
                hoverinfo="text",
            )
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=[original_x], y=[0.0], mode="markers", name="original",
                   marker={"color": ORIGINAL, "size": 13, "symbol": "square"})
    )  # fmt: skip
    marks = (("best global setting", r.best_global, "diamond", NEUTRAL),
             ("chosen", r.chosen, "star", COMPRESSED))  # fmt: skip
    for label, t, symbol, color in marks:
        if t is not None and t.ok and x_of(t) is not None:
            fig.add_trace(
                go.Scatter(x=[x_of(t)], y=[t.drop], mode="markers", name=f"{label} (#{t.id})",
                           marker={"color": color, "size": 18, "symbol": symbol,
                                   "line": {"color": "#222", "width": 1}})
            )  # fmt: skip
    fig.add_hline(
        y=r.max_drop, line_dash="dash", line_color=BAD,
        annotation_text=f"budget: drop <= {r.max_drop}", annotation_position="top left",
    )  # fmt: skip
    fig.update_layout(xaxis_title=x_title, yaxis_title=f"{r.metric} drop (lower is better)")
    return fig


def auto_page(r: AutoResult) -> Page:
    import plotly.graph_objects as go

    verdict = "found" if r.found else "nothing fits the budget"
    page = Page(
        f"onnxcomp auto: {Path(r.model).name}",
        f"objective {r.objective}; budget {r.metric} drop <= {r.max_drop}; {verdict}; "
        f"{len(r.trials)} trials in {r.seconds:.1f} s",
    )
    rows = []
    for label, t in (("chosen", r.chosen), ("best global setting", r.best_global)):
        if t is not None and t.ok and t.bytes is not None and t.deflate_bytes is not None:
            rows.append([label, f"#{t.id}", _summary(t, r.ladder), f"{t.drop:.4f}",
                         f"{t.bytes:,}", f"{t.deflate_bytes:,}",
                         f"{t.bytes / max(r.original_bytes, 1):.1%}"])  # fmt: skip
    rows.append(["original", "", "", f"0 ({r.metric} {r.baseline:.4f})",
                 f"{r.original_bytes:,}", f"{r.original_deflate_bytes:,}", "100.0%"])  # fmt: skip
    page.table(["", "trial", "setting", "drop", "bytes", "deflated", "of original"], rows)
    if r.recipe:
        page.text(f"recipe: {r.recipe}")
    held_back = verification_lines(r)  # the finalists judged on the held-back data
    if held_back:
        page.heading("Verification on held-back data")
        page.bullets(held_back)

    ok = [t for t in r.trials if t.ok and t.drop is not None and t.deflate_bytes is not None]
    page.heading("Trials: size against metric drop")
    page.figure(
        _pareto(r, lambda t: t.bytes, "size (bytes)", ok, r.original_bytes)
    )  # fmt: skip
    timed = [t for t in ok if "latency_ms" in t.extra]
    if timed and "original" in r.latency_ms:
        page.heading("Timed candidates: latency against metric drop")
        page.figure(
            _pareto(r, lambda t: t.extra.get("latency_ms"), "latency (ms, median)", timed,
                    r.latency_ms["original"])
        )  # fmt: skip

    if r.sensitivity:
        page.heading("Per layer: chosen setting over sensitivity")
        page.text(
            "Colour: the metric drop with the layer alone compressed at each setting "
            "(the float column is the original, 0). Star: the chosen model's setting."
        )
        layers = list(r.sensitivity)
        rungs = list(r.ladder)
        z: list[list[float | None]] = [
            [0.0, *(r.sensitivity[name].get(x) for x in rungs[1:])] for name in layers
        ]
        fig = go.Figure(
            go.Heatmap(z=z, x=rungs, y=layers, colorscale="Reds", zmin=0,
                       colorbar={"title": "drop"}, hoverongaps=False)
        )  # fmt: skip
        if r.chosen is not None:
            fig.add_trace(
                go.Scatter(
                    x=[rungs[r.chosen.config.get(name, 0)] for name in layers], y=layers,
                    mode="markers", name="chosen",
                    marker={"symbol": "star", "size": 16, "color": COMPRESSED,
                            "line": {"color": "#222", "width": 1}},
                )
            )  # fmt: skip
        fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=layers)
        fig.update_layout(showlegend=False)
        page.figure(fig, height=max(300, 60 + 28 * len(layers)))

    failed = [t for t in r.trials if not t.ok]
    if failed:
        page.heading("Failed trials")
        page.table(["trial", "stage", "error"], [[t.id, t.stage, t.error] for t in failed])
    return page


def write_auto_html(r: AutoResult, path: str | os.PathLike) -> Path:
    return auto_page(r).write(path)
