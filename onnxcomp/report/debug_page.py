"""The debug page: per-layer error along the graph's order, the worst layers marked,
and the hints that say what to do about them."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from onnxcomp.report.page import BAD, NEUTRAL, ORIGINAL, Page

if TYPE_CHECKING:
    from onnxcomp.debug import DebugResult

WORST = 5  # layers highlighted: the largest added error


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _short(name: str, limit: int = 32) -> str:
    """Exporters name nodes by their module path: the last two parts say which layer."""
    tail = "/".join(name.strip("/").split("/")[-2:]) or name
    return tail if len(tail) <= limit else "..." + tail[-(limit - 3) :]


def debug_page(r: DebugResult) -> Page:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    page = Page(
        f"onnxcomp debug: {Path(r.compressed).name} vs {Path(r.original).name}",
        f"{'SYNTHETIC' if r.synthetic else 'data'}: {r.data}; {r.samples} samples compared; "
        f"{len(r.layers)} layers",
    )
    worst = {id(x) for x in r.layers[:WORST] if x.added_error > 0}
    ordered = sorted(r.layers, key=lambda x: x.index)
    xs = list(range(len(ordered)))  # graph position; names go to ticks and hover
    step = max(1, math.ceil(len(ordered) / 40))
    ticks = xs[::step]
    colors = [BAD if id(x) in worst else NEUTRAL for x in ordered]
    page.heading("Error along the graph")
    page.text(
        f"Top: SQNR of each layer's output (dB, higher is better). Bottom: the relative error "
        f"each layer adds on top of its inputs; the {len(worst)} largest are red."
    )
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    hover = [
        f"{x.node} ({x.op_type})<br>rel err {x.rel_error:.3g}, added {x.added_error:.3g}"
        + (f"<br>weights: {x.weights}" if x.weights else "")
        for x in ordered
    ]
    fig.add_trace(
        go.Scatter(x=xs, y=[_finite(x.sqnr_db) for x in ordered], mode="lines+markers",
                   name="SQNR dB", line_color=ORIGINAL, marker={"color": colors, "size": 8},
                   hovertext=hover, hoverinfo="text"),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=xs, y=[_finite(x.added_error) for x in ordered], name="added error",
               marker_color=colors, hovertext=hover, hoverinfo="text"),
        row=2, col=1,
    )  # fmt: skip
    fig.update_yaxes(title_text="SQNR dB", row=1, col=1)
    fig.update_yaxes(title_text="added rel. error", row=2, col=1)
    fig.update_xaxes(
        tickvals=ticks, ticktext=[_short(ordered[i].node) for i in ticks], tickangle=-45
    )
    fig.update_layout(showlegend=False)
    page.figure(fig, height=560)

    page.heading("Worst layers")
    top = r.layers[: max(WORST, 15)]
    page.table(
        ["layer", "op", "SQNR dB", "rel err", "added", "weights", "int8 output"],
        [
            [x.node, x.op_type, "inf" if not math.isfinite(x.sqnr_db) else f"{x.sqnr_db:.1f}",
             f"{x.rel_error:.3g}", f"{x.added_error:.3g}", x.weights,
             "yes" if x.quantized_output else ""]
            for x in top
        ],
        bad={i for i, x in enumerate(top) if id(x) in worst},
    )  # fmt: skip
    hints = [f"{x.node}: {x.hint}" for x in r.layers if x.hint]
    page.heading("Hints")
    if hints:
        page.bullets(hints, "hints")
    else:
        page.text("no layer adds enough error to need a change")
    if r.unmatched:
        page.heading("Not compared")
        page.text(", ".join(r.unmatched))
    return page


def write_debug_html(r: DebugResult, path: str | os.PathLike) -> Path:
    return debug_page(r).write(path)
