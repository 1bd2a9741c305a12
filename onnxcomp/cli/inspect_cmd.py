"""onnxcomp inspect MODEL [--json]"""

from __future__ import annotations

import click

from onnxcomp.cli._app import app, emit_json, say
from onnxcomp.inspect_model import inspect, render


@app.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def inspect_command(model: str, as_json: bool) -> int:
    """Show a model's interface, ops, parameters, sparsity and quantization."""
    result = inspect(model)
    if as_json:
        emit_json(result)
    else:
        say(render(result))
    return 0
