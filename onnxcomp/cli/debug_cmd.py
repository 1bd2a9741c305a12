"""onnxcomp debug ORIGINAL COMPRESSED --data DATA [--top N] [--json]"""

from __future__ import annotations

import click

from onnxcomp.cli._app import app, emit_json, say
from onnxcomp.debug import debug, render


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
def debug_command(original: str, compressed: str, data: str, top: int, as_json: bool) -> int:
    """Per-layer error of COMPRESSED against ORIGINAL, the layers adding most error first."""
    result = debug(original, compressed, data)
    if as_json:
        emit_json(result)
    else:
        say(render(result, top=top or None))
    return 0
