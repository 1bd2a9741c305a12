"""onnxcomp inspect MODEL [--json]"""

from __future__ import annotations

from pathlib import Path

import click

from onnxcomp.cli._app import app, emit_json, escape, say
from onnxcomp.graph.storage_forms import StoredWeight
from onnxcomp.inspect_model import InspectResult, TensorInfo, inspect


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


def render(result: InspectResult) -> str:
    """A human summary; ``--json`` prints to_dict() instead."""

    def fmt(t: TensorInfo) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in t.shape)
        return f"  {escape(t.name)}: {t.dtype}[{escape(dims)}]"

    lines = [
        f"{escape(Path(result.path).name)}: {result.file_bytes:,} bytes, IR v{result.ir_version}"
        + (f", from {escape(result.producer)}" if result.producer else ""),
        "opsets: " + ", ".join(f"{escape(d or 'ai.onnx')} {v}" for d, v in result.opsets.items()),
        "inputs:",
        *map(fmt, result.inputs),
        "outputs:",
        *map(fmt, result.outputs),
        f"nodes: {result.nodes} ({result.subgraphs} subgraphs); ops: "
        + ", ".join(f"{escape(k)} {v}" for k, v in result.op_types.items()),
        f"parameters: {result.parameters:,} elements; bytes by dtype: "
        + ", ".join(f"{k} {v:,}" for k, v in result.parameter_bytes.items()),
        f"zero weights: {result.zero_fraction:.1%}",
        f"quantized tensors: {len(result.quantized_tensors)}",
    ]
    if result.external_data:
        lines.append("external data: " + ", ".join(map(escape, result.external_data)))
    if result.metadata_keys:
        lines.append("metadata: " + ", ".join(map(escape, result.metadata_keys)))
    if result.storage:
        lines += render_forms(result.storage)
    if result.removed_channels:
        lines.append(f"removed channels (--prune-channels): {len(result.removed_channels)} layers")
        lines += [f"  {escape(k)}: {a} -> {b}" for k, (a, b) in result.removed_channels.items()]
    return "\n".join(lines)


def render_forms(forms: list[StoredWeight]) -> list[str]:
    """One line per stored weight: its form, elements, bytes and bits per element."""
    lines = ["storage:"]
    for f in forms:
        lines.append(
            f"  {escape(f.name)}: {f.form}, {f.elements:,} elements in {f.bytes:,} B "
            f"({f.bits_per_element:.2f} bits each)"
        )
    return lines
