"""onnxcomp auto MODEL -o OUT --calib DATA [--data EVAL] --max-drop X [--objective ...]"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from onnxcomp.auto import AutoResult, auto
from onnxcomp.auto.report import verification_lines
from onnxcomp.cli._app import app, emit_json, escape, json_progress, say
from onnxcomp.cli._options import click_options
from onnxcomp.io import progress
from onnxcomp.options import AutoOptions
from onnxcomp.report import require_plotly


@app.command("auto")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click_options(AutoOptions)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--html", "html", metavar="FILE", type=click.Path(dir_okay=False),
    help="Also write a self-contained HTML report with plots (needs onnxcomp[report]).",
)  # fmt: skip
def auto_command(model: str, output: str, as_json: bool, html: str | None, **kwargs) -> int:
    """Find the most compressed model within an accuracy budget, and write its recipe."""
    json_progress(as_json)
    kwargs["log"] = progress.status_log("auto")  # trial lines: quiet under -q, JSON under --json
    if html:
        require_plotly()
    page: Callable[..., Any] | None = None
    if html:
        from onnxcomp.report.auto_page import write_auto_html

        page = write_auto_html
    result = auto(model, output, html=html, html_page=page, **kwargs)
    if as_json:
        emit_json(result)
    else:
        say(render(result))
    return 0 if result.found else 1


def render(r: AutoResult) -> str:
    lines = []
    if r.found and r.chosen is not None:
        c = r.chosen
        assert c.bytes is not None and c.deflate_bytes is not None
        lines.append(
            f"wrote {escape(str(r.output))}: {c.bytes:,} B ({c.bytes / r.original_bytes:.1%}), "
            f"{c.deflate_bytes:,} B deflated ({c.deflate_bytes / r.original_deflate_bytes:.1%}); "
            f"{r.metric} {c.value:.4f} vs {r.baseline:.4f} (search drop {c.drop:.4f})"
        )
        lines.append(f"recipe: {escape(str(r.recipe))}")
    else:
        lines.append(f"nothing fits: no compressed model keeps the {r.metric} drop <= {r.max_drop}")
    lines += [escape(line) for line in verification_lines(r)]
    if r.best_global is not None and r.best_global.bytes:
        g = r.best_global
        lines.append(f"best global setting: {g.bytes:,} B, drop {g.drop:.4f}")
    lines.append(
        f"{len(r.trials)} trials in {r.seconds:.1f} s; reports: {escape(', '.join(r.reports))}"
    )
    return "\n".join(lines)
