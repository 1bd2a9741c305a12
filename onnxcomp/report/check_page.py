"""The check page: size, latency and metric side by side, both latency distributions,
and how closely each output agrees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from onnxcomp.report.page import COMPRESSED, ORIGINAL, Page, pct

if TYPE_CHECKING:
    from onnxcomp.check import CheckResult


def check_page(r: CheckResult) -> Page:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    page = Page(
        f"onnxcomp check: {Path(r.compressed).name} vs {Path(r.original).name}",
        f"{'SYNTHETIC inputs' if r.synthetic else 'data'}: {r.data}, {r.samples} samples",
    )
    if r.max_drop is not None:
        verdict = "PASS" if r.passed else "FAIL"
        b = r.drop_bound  # with --confidence the gate is the bound, not the measured drop
        bound = (
            "" if b is None else f", upper bound {b.upper:.2%} at {b.confidence:.0%} ({b.method})"
        )
        page.text(
            f"{verdict}: drop {pct(r.drop)}{bound} vs max {pct(r.max_drop)}",
            "pass" if r.passed else "fail",
        )
    for note in r.notes:
        page.text(f"note: {note}")
    lo, lc = r.latency_original, r.latency_compressed
    rows: list[list[object]] = [
        ["file bytes", f"{r.original_bytes:,}", f"{r.compressed_bytes:,}", f"{r.size_ratio:.3f}"],
        [
            "parameter bytes",
            f"{r.original_param_bytes:,}",
            f"{r.compressed_param_bytes:,}",
            f"{r.compressed_param_bytes / max(r.original_param_bytes, 1):.3f}",
        ],
    ]
    if lo and lc:
        rows.append(["latency median ms", f"{lo.median_ms:.3f}", f"{lc.median_ms:.3f}",
                     f"{lc.median_ms / lo.median_ms:.3f}"])  # fmt: skip
        rows.append(["latency p90 ms", f"{lo.p90_ms:.3f}", f"{lc.p90_ms:.3f}",
                     f"{lc.p90_ms / lo.p90_ms:.3f}"])  # fmt: skip
    if r.accuracy_original is not None:
        rows.append(["accuracy", pct(r.accuracy_original), pct(r.accuracy_compressed),
                     f"drop {pct(r.accuracy_drop)}"])  # fmt: skip
    page.heading("Side by side")
    page.table(["", "original", "compressed", "ratio"], rows)

    panels = ["size (MB)", "latency (ms)"]
    metric_name = "accuracy" if r.accuracy_original is not None else "top-1 agreement"
    panels.append(metric_name)
    if (r.judgement or {}).get("task"):
        panels[2] = f"task: {r.judgement['task']['task']}"  # type: ignore[index]
    fig = make_subplots(rows=1, cols=3, subplot_titles=panels)
    mb = 1e6
    size_x = ["file", "parameters"]
    size = {
        "original": [r.original_bytes / mb, r.original_param_bytes / mb],
        "compressed": [r.compressed_bytes / mb, r.compressed_param_bytes / mb],
    }
    lat_x = ["median", "p90"]
    lat = {
        "original": [lo.median_ms, lo.p90_ms] if lo else [],
        "compressed": [lc.median_ms, lc.p90_ms] if lc else [],
    }
    task = (r.judgement or {}).get("task")
    if task:
        met_x = [task["metric"]]
        met = {"original": [task["original"]], "compressed": [task["compressed"]]}
    elif r.accuracy_original is not None:
        met = {"original": [r.accuracy_original], "compressed": [r.accuracy_compressed]}
        met_x = ["accuracy"]
    else:  # the original agrees with itself: 1 by definition
        outs = [o for o in r.outputs if o.top1_agreement is not None]
        met_x = [o.name for o in outs]
        met = {"original": [1.0] * len(outs), "compressed": [o.top1_agreement for o in outs]}
    for name, color in (("original", ORIGINAL), ("compressed", COMPRESSED)):
        for col, xs, ys in ((1, size_x, size[name]), (2, lat_x, lat[name]), (3, met_x, met[name])):
            if not ys:
                continue
            fig.add_trace(
                go.Bar(x=xs, y=ys, name=name, marker_color=color, legendgroup=name,
                       showlegend=col == 1),
                row=1, col=col,
            )  # fmt: skip
    fig.update_layout(barmode="group")
    page.figure(fig, height=380)

    page.heading("Latency distribution")
    if lo and lc and lo.samples_ms and lc.samples_ms:
        dist = go.Figure()
        for name, stats, color in (("original", lo, ORIGINAL), ("compressed", lc, COMPRESSED)):
            dist.add_trace(
                go.Box(x=list(stats.samples_ms), name=name, marker_color=color,
                       boxpoints="all", jitter=0.4, pointpos=0)
            )  # fmt: skip
        dist.update_layout(
            xaxis_title=f"ms per run (batch {r.latency_batch}, {r.threads} thread(s), "
            f"{lo.runs} runs each, interleaved)",
            xaxis_type="log",  # a busy machine's rare slow runs would squash the rest
            showlegend=False,
        )
        page.figure(dist, height=320)
    else:
        page.text("latency was not measured (--runs 0)")

    page.heading("What the gate reads")
    page.text(_judged(r))
    page.heading("Per-output agreement")
    page.table(
        ["output", "top-1 agreement", "global cosine", "worst component", "its error",
         "max abs error", "exact"],
        [
            [o.name, pct(o.top1_agreement), "n/a" if o.cosine is None else f"{o.cosine:.6f}",
             o.worst_component or "", "" if o.worst_component_error is None
             else f"{o.worst_component_error:.4g}", f"{o.max_abs_error:.4g}",
             "yes" if o.exact else "no"]
            for o in r.outputs
        ],
    )  # fmt: skip
    scored = [o for o in r.outputs if o.top1_agreement is not None or o.cosine is not None]
    if scored:
        agree = go.Figure()
        names = [o.name for o in scored]
        agree.add_trace(go.Bar(x=names, y=[o.top1_agreement for o in scored],
                               name="top-1 agreement", marker_color=COMPRESSED))  # fmt: skip
        agree.add_trace(go.Bar(x=names, y=[o.cosine for o in scored], name="cosine",
                               marker_color=ORIGINAL))  # fmt: skip
        agree.update_layout(barmode="group", yaxis_title="1 = identical to the original")
        page.figure(agree, height=320)
    return page


def _judged(r: CheckResult) -> str:
    task = (r.judgement or {}).get("task")
    if not task:
        return f"{r.metric or 'nothing comparable'}: drop {pct(r.drop)} (no task; --task sets one)"
    figures = ", ".join(f"{k} {v:.4g}" for k, v in task["figures"].items())
    return (
        f"task {task['task']} ({task['detail']}): {task['metric']} {task['original']:.4f} -> "
        f"{task['compressed']:.4f}, drop {pct(r.drop)}; {figures}"
    )


def write_check_html(r: CheckResult, path: str | os.PathLike) -> Path:
    return check_page(r).write(path)
