"""onnxcomp demo [--out DIR]: build the digits model, compress it, check it."""

from __future__ import annotations

from pathlib import Path

import click

from onnxcomp.check import check
from onnxcomp.cli import check_cmd, compress_cmd
from onnxcomp.cli._app import app, say
from onnxcomp.cli.demo import LABELS, build_digits
from onnxcomp.pipeline.compress import CompressOptions, compress


@app.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="demo_out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the model, data and results.",
)
def demo_command(out_dir: str) -> int:
    """Train a digits classifier, prune 50% + int8 weights, and check it against the original."""
    out = Path(out_dir)
    model, test, calib = build_digits(out)
    say(f"built {model} (scikit-learn digits MLP), test split {test}, calibration split {calib}")
    say(
        f"$ onnxcomp compress {model} -o {out / 'digits_small.onnx'} "
        "--prune-sparsity 0.5 --quantize weights"
    )
    small = out / "digits_small.onnx"
    result = compress(model, small, CompressOptions(prune_sparsity=0.5, quantize="weights"))
    say(compress_cmd.render(result))
    say(f"$ onnxcomp check {model} {small} --data {test} --labels {LABELS} --max-drop 0.02")
    report = check(model, small, data=test, labels=LABELS, max_drop=0.02)
    say(check_cmd.render(report))
    return 0 if report.passed else 1
