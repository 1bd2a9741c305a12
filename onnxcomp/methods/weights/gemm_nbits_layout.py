"""Weight-only int8 Gemm with transB=1: store the weight as [K, N] so onnxruntime fuses it.

onnxruntime fuses DequantizeLinear -> Gemm into MatMulNBits only when B is [K, N]
(transB=0, per-channel axis 1). Exporters write Linear layers as Gemm(transB=1) with a
[N, K] weight; left so, the DequantizeLinear runs on every inference (VGG-19's 400 MB
fc6: 0.83x fp32 speed). Transposing the stored int8 codes once fixes the layout; the
values, scales and bytes are the same.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.methods.weights.decode_at_load import NBITS_MIN_ELEMENTS, NBITS_MIN_K, nbits_blocked

logger = logging.getLogger(__name__)


def _transposable(dq: ir.Node) -> ir.Node | None:
    """The Gemm(transB=1) reading ``dq`` as its only consumer, when the swap is safe."""
    if dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx"):
        return None
    if dq.attributes.get_int("block_size", 0):
        return None
    q = dq.inputs[0]
    if q is None or q.const_value is None or q.is_graph_input() or len(q.const_value.shape) != 2:
        return None
    if len(list(q.uses())) != 1 or q.const_value.dtype != ir.DataType.INT8:
        return None
    n, k = (int(d) for d in q.const_value.shape.numpy())
    if n * k < NBITS_MIN_ELEMENTS or k < NBITS_MIN_K:
        return None  # decoded at load anyway: the layout does not matter
    scale = dq.inputs[1]
    if scale is None or scale.const_value is None:
        return None
    if scale.const_value.size > 1 and dq.attributes.get_int("axis", 1) % 2 != 0:
        return None
    out = dq.outputs[0]
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None
    gemm, index = uses[0]
    if gemm.op_type != "Gemm" or index != 1 or not gemm.attributes.get_int("transB", 0):
        return None
    return None if nbits_blocked(gemm) else gemm


class GemmWeightLayoutPass(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.transposed: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.transposed = []
        names = NameAllocator(model)
        for graph in [model.graph, *model.graph.subgraphs()]:
            for dq in list(graph):
                gemm = _transposable(dq)
                if gemm is None:
                    continue
                q, scale = dq.inputs[0], dq.inputs[1]
                assert q is not None and q.const_value is not None  # checked by _transposable
                assert scale is not None and scale.const_value is not None
                codes = np.ascontiguousarray(q.const_value.numpy().T)
                base = q.name or "weight"
                new = add_initializer(graph, names.new(f"{base}_kn"), codes)
                dq.replace_input_with(0, new)
                if graph.initializers.get(base) is q and not q.uses():
                    del graph.initializers[base]
                if scale.const_value.size > 1:
                    dq.attributes["axis"] = ir.AttrInt64("axis", 1)
                dq.outputs[0].shape = ir.Shape(codes.shape)
                gemm.attributes["transB"] = ir.AttrInt64("transB", 0)
                self.transposed.append(base)
        if self.transposed:
            logger.info("%d Gemm weights stored [K, N] for MatMulNBits", len(self.transposed))
        return ir.passes.PassResult(model, modified=bool(self.transposed))
