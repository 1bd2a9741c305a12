"""Keep a residual Add and the LayerNorm after it as two onnxruntime kernels.

onnxruntime fuses ``Add(a, b) -> LayerNormalization`` (or the decomposed ReduceMean/Sub
chain it first fuses into one) into its contrib ``SkipLayerNormalization`` whenever both
Add inputs are 3-D with equal static shapes. On x86 CPU (1.32, 1 thread) that kernel is
about 4x slower than the Add plus LayerNormalization it replaces (~200 us vs ~45 us on a
128x256 tensor), which is a fifth of an int8 BERT layer's time once its MatMuls run int8.
An identity ``Reshape(x, [0, 0, -1])`` between the Add and its readers breaks the fusion
pattern and costs nothing: onnxruntime's Reshape aliases its input buffer.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator

logger = logging.getLogger(__name__)

NORMALIZERS = ("LayerNormalization", "ReduceMean")


def _fusable_add(node: ir.Node) -> bool:
    """An Add onnxruntime would fold into SkipLayerNormalization: float, 3-D, equal shapes."""
    if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    out = node.outputs[0]
    if out.dtype != ir.DataType.FLOAT or out.is_graph_output():
        return False
    shapes = [v.shape if v is not None else None for v in node.inputs]
    if any(s is None or len(s) != 3 for s in shapes):
        return False
    if any(v.const_value is not None for v in node.inputs if v is not None):
        return False
    return any(u.node.op_type in NORMALIZERS and u.idx == 0 for u in out.uses())


def fusable_adds(model: ir.Model) -> int:
    """How many Adds onnxruntime would fuse with the LayerNorm after them."""
    return sum(1 for n in model.graph if _fusable_add(n))


class KeepLayerNormUnfusedPass(ir.passes.InPlacePass):
    """Route each residual Add that feeds a LayerNorm through an identity Reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.guarded: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        adds = [n for n in graph if _fusable_add(n)]
        if not adds:
            return ir.passes.PassResult(model, modified=False)
        names = NameAllocator(model)
        shape = add_initializer(
            graph, names.new("layernorm_guard_shape"), np.array([0, 0, -1], np.int64)
        )
        for add in adds:
            out = add.outputs[0]
            uses = list(out.uses())
            reshape = ir.node("Reshape", [out, shape], name=names.new(f"{add.name or 'add'}_guard"))
            guarded = reshape.outputs[0]
            guarded.name = names.new(f"{out.name or 'add'}_guarded")
            guarded.dtype, guarded.shape = out.dtype, out.shape  # type: ignore[assignment]
            graph.insert_after(add, reshape)
            for use in uses:
                use.node.replace_input_with(use.idx, guarded)
            self.guarded.append(add.name or "")
        logger.info("kept %d Add+LayerNorm pairs out of SkipLayerNormalization", len(adds))
        return ir.passes.PassResult(model, modified=True)
