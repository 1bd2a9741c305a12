"""onnxcomp compress MODEL -o OUT [prune options] [--quantize weights|int8|codebook|int4] ..."""

from __future__ import annotations

import click

from onnxcomp.cli._app import app, emit_json, escape, json_progress, say
from onnxcomp.cli._options import click_options
from onnxcomp.options import CompressOptions
from onnxcomp.pipeline.compress import CompressResult
from onnxcomp.pipeline.compress import compress as run_compress
from onnxcomp.recipe import load_recipe


@app.command("compress")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the compressed model (never the input).",
)
@click_options(CompressOptions)
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Settings from a TOML/JSON recipe (global and per layer); options given "
    "on the command line override it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_context
def compress_command(
    ctx: click.Context, model: str, output: str, recipe: str | None, as_json: bool, **kwargs
) -> int:
    """Prune and/or quantize MODEL into OUTPUT, validated before it is written."""
    json_progress(as_json)
    if recipe is None:
        options = CompressOptions(**kwargs)
    else:
        options = load_recipe(recipe)
        for name, value in kwargs.items():
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                setattr(options, name, value)
    options.exclude = tuple(options.exclude)
    result = run_compress(model, output, options)
    if as_json:
        emit_json(result)
    else:
        say(render(result))
    return 0


def render(r: CompressResult) -> str:
    lines = [escape(n) if n.startswith("warning:") else f"note: {escape(n)}" for n in r.notes]
    for p in r.pruned:
        lines.append(
            f"pruned {escape(p.name)} ({escape(', '.join(p.op_types))}): "
            f"{p.zeros_after:,}/{p.size:,} zeros "
            f"({p.sparsity:.1%}, was {p.zeros_before / p.size if p.size else 0:.1%})"
        )
    lines += [f"stripped: {escape(s)}" for s in r.stripped]
    if r.quantized:
        before = sum(q.bytes_before for q in r.quantized)
        after = sum(q.bytes_after for q in r.quantized)
        per_channel = sum(q.axis is not None for q in r.quantized)
        lines.append(
            f"quantized {len(r.quantized)} weights to {r.quantized_to} "
            f"({per_channel} per channel): "
            f"{before:,} -> {after:,} bytes"
        )
    for rec in r.recovered:
        lines.append(
            f"recovered {escape(rec.layer)} ({rec.method}): "
            f"output error {rec.baseline:.3g} plain -> "
            f"{rec.error:.3g}" + (f" ({escape(rec.note)})" if getattr(rec, "note", "") else "")
        )
    for name, why in sorted(r.skipped.items()):
        if name.endswith(" (int4)"):
            lines.append(f"not int4: {escape(name.removesuffix(' (int4)'))} ({escape(why)})")
        else:
            lines.append(f"kept float: {escape(name)} ({escape(why)})")
    for line in r.activations.get("summary", []) if isinstance(r.activations, dict) else []:
        lines.append(escape(line))
    lines.append(
        f"wrote {escape(r.output_path)}: {r.output_bytes:,} bytes ({r.size_ratio:.1%} of "
        f"{r.input_bytes:,}) in {r.seconds:.2f} s"
    )
    if r.output_bytes > r.input_bytes:
        lines.append("warning: the output is larger than the input (--allow-larger)")
    return "\n".join(lines)
