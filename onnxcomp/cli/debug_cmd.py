"""onnxcomp debug ORIGINAL COMPRESSED --data DATA [--top N] [--json]"""

from __future__ import annotations

import math
from typing import Any

import click

from onnxcomp.cli._app import app, emit_json, escape, say, wrote
from onnxcomp.cli._options import click_options
from onnxcomp.debug import DebugResult, debug
from onnxcomp.io.safe_io import check_report_target
from onnxcomp.options import TaskOptions
from onnxcomp.report import require_plotly


@app.command("debug")
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@click.option(
    "--data",
    metavar="DATA",
    required=True,
    help=".npz, folder of .npz, or ONNX test-data folder both models run on.",
)
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Rows in the table (0: all); --json always has every layer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--html", "html", metavar="FILE", type=click.Path(dir_okay=False),
    help="Also write a self-contained HTML report with plots (needs onnxcomp[report]).",
)  # fmt: skip
@click_options(TaskOptions)
def debug_command(
    original: str,
    compressed: str,
    data: str,
    top: int,
    as_json: bool,
    html: str | None,
    **task: Any,
) -> int:
    """Per-layer error of COMPRESSED against ORIGINAL: the layers whose original weight
    wins back most of the task metric's drop first, then by the error they add."""
    if html:
        require_plotly()
        check_report_target(html, "--html report", (original, compressed, data))
    options = TaskOptions(**task)
    options.validate_task()
    result = debug(original, compressed, data, options=options)
    if html:
        from onnxcomp.report.debug_page import write_debug_html

        page = write_debug_html(result, html)
    if as_json:
        emit_json(result)
    else:
        say(render(result, top=top or None))
    if html:
        wrote(page, as_json)
    return 0


def _fmt_db(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1f}"


def render(result: DebugResult, top: int | None = 20) -> str:
    """A text table, worst contributor first, hints below."""
    rows = result.layers if top is None else result.layers[:top]
    width = max([len(escape(r.node)) for r in rows] + [5])
    lines = []
    if result.drop is not None:
        lines.append(f"compressed model: {escape(result.metric)} drop {result.drop:.4g}")
    lines.append(
        f"{'layer':<{width}}  {'op':<14}{'SQNR dB':>9}{'rel err':>10}{'added':>10}"
        f"{'task won':>10}  weights"
    )
    for r in rows:
        tags = [r.weights] if r.weights else []
        tags += ["int8 output"] if r.quantized_output else []
        won = "" if r.task_effect is None else f"{r.task_effect:.3g}"
        lines.append(
            f"{escape(r.node):<{width}}  {escape(r.op_type):<14}{_fmt_db(r.sqnr_db):>9}"
            f"{r.rel_error:>10.3g}{r.added_error:>10.3g}{won:>10}  {', '.join(tags)}"
        )
    hints = [f"  {escape(r.node)}: {escape(r.hint)}" for r in rows if r.hint]
    if hints:
        lines.append("hints:")
        lines += hints
    if top is not None and len(result.layers) > top:
        lines.append(f"({len(result.layers) - top} more layers; --top 0 shows all)")
    kind = "SYNTHETIC" if result.synthetic else "data"
    lines.append(f"{kind}: {escape(result.data)}; {result.samples} samples compared")
    if result.channels:
        removed = ", ".join(f"{escape(k)} {v}" for k, v in list(result.channels.items())[:8])
        lines.append(f"channels removed ({len(result.channels)} tensors): {removed}")
    if result.unmatched:
        lines.append(
            f"not compared ({len(result.unmatched)}): {escape(', '.join(result.unmatched[:8]))}"
        )
    return "\n".join(lines)
