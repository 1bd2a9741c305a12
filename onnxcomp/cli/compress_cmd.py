"""onnxcomp compress MODEL -o OUT [prune options] [--quantize weights|int8] ..."""

from __future__ import annotations

import click

from onnxcomp.cli._app import app, emit_json, say
from onnxcomp.compress import CALIB_METHODS, QUANTIZE_MODES, CompressOptions, CompressResult
from onnxcomp.compress import compress as run_compress
from onnxcomp.recipe import load_recipe
from onnxcomp.recover import METHODS as RECOVER_METHODS


@app.command("compress")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the compressed model (never the input).",
)
@click.option(
    "--prune-threshold",
    type=float,
    metavar="EPS",
    help="Zero every weight element with |w| <= EPS.",
)
@click.option(
    "--prune-sparsity",
    type=float,
    metavar="S",
    help="Zero the smallest S fraction (0 <= S < 1) of each weight tensor.",
)
@click.option(
    "--global", "global_prune", is_flag=True, help="Rank all weights together for --prune-sparsity."
)
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZE_MODES),
    help="weights: int8 weights, float activations; int8: weights and activations; "
    "codebook: k-means shared weights (a download/disk-size mode, fp32 speed).",
)
@click.option(
    "--bits",
    type=click.IntRange(2, 8),
    default=4,
    show_default=True,
    help="--quantize codebook: 2**N shared values per weight tensor.",
)
@click.option(
    "--pack",
    is_flag=True,
    help="Store codebook codes below 8 bits a code, or sparse; decoded by onnxruntime at load.",
)
@click.option("--per-tensor", is_flag=True, help="One scale per weight tensor, not per channel.")
@click.option("--calib", metavar="DATA", help="Calibration data for --quantize int8 and --recover.")
@click.option(
    "--recover",
    type=click.Choice(RECOVER_METHODS),
    help="Teacher-guided repair from --calib data: bias correction, GPTQ weight "
    "reconstruction, or SparseGPT pruning.",
)
@click.option(
    "--calib-method",
    type=click.Choice(CALIB_METHODS),
    default="minmax",
    show_default=True,
    help="How activation ranges are chosen.",
)
@click.option(
    "--percentile",
    type=float,
    default=99.99,
    show_default=True,
    help="Percentile kept by --calib-method percentile.",
)
@click.option(
    "--activation-type",
    type=click.Choice(["auto", "uint8", "int8"]),
    default="auto",
    show_default=True,
    help="Integer type of quantized activations.",
)
@click.option(
    "--measure/--no-measure",
    default=True,
    show_default=True,
    help="int8: time the result against float in onnxruntime and keep float the op families "
    "that do not pay (decisions depend on timing; --no-measure is bit-for-bit reproducible).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="NAME_OR_OPTYPE",
    help="Keep this node, weight or op type in float (repeatable).",
)
@click.option(
    "--recipe",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Settings from a TOML/JSON recipe (global and per layer); options given "
    "on the command line override it.",
)
@click.option(
    "--allow-larger",
    is_flag=True,
    help="Write the output even when it is larger than the input (refused by default, exit 1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_context
def compress_command(
    ctx: click.Context, model: str, output: str, recipe: str | None, as_json: bool, **kwargs
) -> int:
    """Prune and/or quantize MODEL into OUTPUT, validated before it is written."""
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
    lines = [f"note: {n}" for n in r.notes]
    for p in r.pruned:
        lines.append(
            f"pruned {p.name} ({', '.join(p.op_types)}): {p.zeros_after:,}/{p.size:,} zeros "
            f"({p.sparsity:.1%}, was {p.zeros_before / p.size if p.size else 0:.1%})"
        )
    lines += [f"stripped: {s}" for s in r.stripped]
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
            f"recovered {rec.layer} ({rec.method}): output error {rec.baseline:.3g} plain -> "
            f"{rec.error:.3g}" + (f" ({rec.note})" if getattr(rec, "note", "") else "")
        )
    for name, why in sorted(r.skipped.items()):
        lines.append(f"kept float: {name} ({why})")
    for line in r.activations.get("summary", []) if isinstance(r.activations, dict) else []:
        lines.append(line)
    lines.append(
        f"wrote {r.output_path}: {r.output_bytes:,} bytes ({r.size_ratio:.1%} of "
        f"{r.input_bytes:,}) in {r.seconds:.2f} s"
    )
    if r.output_bytes > r.input_bytes:
        lines.append("warning: the output is larger than the input (--allow-larger)")
    return "\n".join(lines)
