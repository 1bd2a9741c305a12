"""compress_model's codebook step: run the pass, report it (kept out of compress.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx_ir as ir

from onnxcomp.passes.quantize_codebook import CodebookQuantizePass
from onnxcomp.weights import Weight


def run_codebook(
    model: ir.Model, options: Any, include: Callable[[Weight], bool], result: Any, recovery: Any
) -> None:
    """Codebook-quantize every included weight; with --calib, importance + GPTQ codes."""
    calib = None
    if recovery is not None:
        calib = recovery.calib
    elif options.calib is not None:
        from onnxcomp.data import input_specs, open_data

        calib = open_data(options.calib, input_specs(model))
    step = CodebookQuantizePass(options.bits, include=include, calib=calib, pack=options.pack)
    step(model)
    if options.pack:
        drop_value_info(model)
    result.quantized += step.records
    result.recovered += step.recovered
    result.quantized_to = f"codebook ({options.bits}-bit)"
    forms: dict[str, int] = {}
    for r in step.records:
        kind = r.storage.split(", ")[-1].split(" (")[0]
        forms[kind] = forms.get(kind, 0) + 1
    if step.records:
        summary = ", ".join(f"{n} {k}" for k, n in sorted(forms.items()))
        result.notes.append(
            f"codebook weights are decoded once by onnxruntime at load ({summary}): the model "
            "runs at fp32 speed and fp32 memory; this mode shrinks downloads and disk"
        )


def drop_value_info(model: ir.Model) -> None:
    """--pack writes the smallest file: intermediate values lose their stored type and
    shape (value_info, up to a sixth of a small conv net's file); onnxruntime infers them."""
    for graph in [model.graph, *model.graph.subgraphs()]:
        keep = {id(v) for v in [*graph.inputs, *graph.outputs]}
        for node in graph:
            for out in node.outputs:
                if id(out) not in keep and not (out.name or "").endswith("_decoded"):
                    out.shape = None
                    out.type = None
