"""onnxcomp auto MODEL -o OUT --calib DATA [--data EVAL] --max-drop X [--objective ...]"""

from __future__ import annotations

import click

from onnxcomp.auto import OBJECTIVES, AutoResult, auto
from onnxcomp.auto.report import verification_lines
from onnxcomp.cli._app import app, emit_json, say
from onnxcomp.evaluate import METRICS
from onnxcomp.recover import METHODS as RECOVER_METHODS


@app.command("auto")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--calib", metavar="DATA", help="Calibration data (needed for int8).")
@click.option("--data", metavar="DATA", help="Evaluation data (default: the calibration data).")
@click.option("--labels", metavar="NAME", help="Array in DATA with the true labels.")
@click.option(
    "--max-drop",
    type=float,
    required=True,
    metavar="X",
    help="Largest metric drop allowed (accuracy, or 1 - agreement/cosine).",
)
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="size",
    show_default=True,
    help="size: smallest deflated file; latency: fastest in onnxruntime.",
)
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    help="Default: accuracy with --labels, else agreement, else cosine.",
)
@click.option("--max-trials", type=int, default=60, show_default=True)
@click.option("--time-limit", type=float, metavar="S", help="Stop searching after S seconds.")
@click.option(
    "--workers",
    type=int,
    default=2,
    show_default=True,
    help="Trials run in parallel in this many processes.",
)
@click.option(
    "--recover",
    type=click.Choice(RECOVER_METHODS),
    help="Repair every trial from --calib data (sparsegpt for pruned layers, gptq for "
    "quantized weights, bias for both).",
)
@click.option(
    "--verify",
    metavar="DATA",
    help="Held-back data the finalists are judged on (default: --verify-fraction of the "
    "search data, which the search then never sees).",
)
@click.option("--verify-fraction", type=float, default=1 / 3, show_default="1/3")
@click.option(
    "--confidence",
    type=float,
    default=0.95,
    show_default=True,
    help="A finalist is accepted when the upper bound of its held-back drop at this "
    "confidence is within --max-drop.",
)
@click.option(
    "--allow-small-data",
    is_flag=True,
    help="When the held-back data is too small to resolve the budget, proceed with a "
    "widened margin instead of refusing (exit 2).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def auto_command(model: str, output: str, as_json: bool, **kwargs) -> int:
    """Find the most compressed model within an accuracy budget, and write its recipe."""
    result = auto(model, output, **kwargs)
    if as_json:
        emit_json(result)
    else:
        say(render(result))
    return 0 if result.found else 1


def render(r: AutoResult) -> str:
    lines = []
    if r.found and r.chosen is not None:
        c = r.chosen
        lines.append(
            f"wrote {r.output}: {c.bytes:,} B ({c.bytes / r.original_bytes:.1%}), "
            f"{c.deflate_bytes:,} B deflated ({c.deflate_bytes / r.original_deflate_bytes:.1%}); "
            f"{r.metric} {c.value:.4f} vs {r.baseline:.4f} (search drop {c.drop:.4f})"
        )
        lines.append(f"recipe: {r.recipe}")
    else:
        lines.append(f"nothing fits: no compressed model keeps the {r.metric} drop <= {r.max_drop}")
    lines += verification_lines(r)
    if r.best_global is not None and r.best_global.deflate_bytes:
        g = r.best_global
        lines.append(f"best global setting: {g.deflate_bytes:,} B deflated, drop {g.drop:.4f}")
    lines.append(f"{len(r.trials)} trials in {r.seconds:.1f} s; reports: {', '.join(r.reports)}")
    return "\n".join(lines)
