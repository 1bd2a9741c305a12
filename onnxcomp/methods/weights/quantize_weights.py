"""Weight-only int8: each float weight becomes int8 + scale feeding a DequantizeLinear.

Symmetric, per output channel by default (the consumer decides the axis: 0 for Conv,
1 for ConvTranspose, the output side of Gemm/MatMul, the row of an embedding table).
Activations stay float; the file shrinks to about a quarter of its weight bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph.edit import add_initializer, insert_at_front
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.streaming import release
from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.methods.weights.saturation import bits_for
from onnxcomp.numerics.scales import max_rounding_error, quantize_weight_symmetric
from onnxcomp.passes.report import CompressReport, QuantRecord

logger = logging.getLogger(__name__)

PER_CHANNEL_MIN_OPSET = 13


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Rewrite float32 weights into int8 DequantizeLinear form."""

    def __init__(
        self,
        *,
        per_channel: bool = True,
        include: Callable[[Weight], bool] = lambda w: True,
        report: CompressReport | None = None,
        reduced: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.per_channel = per_channel
        # Weights read by these op types get codes in [-63, 63] (methods/weights/saturation.py).
        self.reduced = reduced
        self.include = include
        self.report = report
        self.records: list[QuantRecord] = []
        self.skipped: dict[str, str] = {}

    def requires(self, model: ir.Model) -> None:
        opset = model.opset_imports.get("", 1)
        needed = PER_CHANNEL_MIN_OPSET if self.per_channel else 10
        if opset < needed:
            raise ir.passes.PreconditionError(
                f"weight quantization needs opset >= {needed}, the model has {opset}"
            )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.records, self.skipped = [], {}
        names = NameAllocator(model)
        cursors: dict[int, ir.Node] = {}
        for weight in find_weights(model):
            reason = self._skip_reason(weight)
            if reason:
                self.skipped[weight.name] = reason
                continue
            float_tensor = weight.value.const_value
            dq = self._rewrite(weight, names)
            release(float_tensor)  # its pages count until unmapped; nothing reads it now
            insert_at_front(weight.graph, dq, cursors)
        modified = bool(self.records)
        if modified:
            before = sum(r.bytes_before for r in self.records)
            after = sum(r.bytes_after for r in self.records)
            logger.info("quantized %d weights: %d -> %d bytes", len(self.records), before, after)
        if self.report is not None:
            self.report.quantized += self.records
            self.report.skipped.update(self.skipped)
        return ir.passes.PassResult(model, modified=modified)

    def _skip_reason(self, weight: Weight) -> str | None:
        if not self.include(weight):
            return "excluded"
        if weight.value.dtype != ir.DataType.FLOAT:
            return f"dtype {weight.value.dtype} (only float32 weights are quantized)"
        if weight.value.is_graph_output():
            return "is a graph output"
        bad = non_finite_count(weight.array)
        if bad:
            # A scale of inf or a NaN channel would be written silently: stop instead.
            raise OnnxcompError(
                f"weight '{weight.name}' holds {bad:,} NaN/Inf values: cannot quantize it "
                f"(--exclude {weight.name} keeps it float)"
            )
        return None

    def _rewrite(self, weight: Weight, names: NameAllocator) -> ir.Node:
        array = weight.array
        axis = weight.channel_axis if self.per_channel and array.ndim > 1 else None
        bits = bits_for(weight.op_types, self.reduced)
        q, scale = quantize_weight_symmetric(array, axis, (1 << (bits - 1)) - 1)
        error = max_rounding_error(array, q, scale, axis)
        base = weight.name
        dq = dequantize_weight(weight, q, scale, axis, names)
        self.records.append(
            QuantRecord(
                base,
                weight.op_types,
                tuple(array.shape),
                axis,
                array.nbytes,
                q.nbytes + scale.nbytes + scale.size,
                error,
                bits,
            )
        )
        return dq


def non_finite_count(array: np.ndarray) -> int:
    """NaN and Inf elements, counted in blocks so a big tensor costs no big temporary."""
    if array.dtype.kind != "f":
        return 0
    flat = array.reshape(-1)
    step = 1 << 22
    return sum(
        int(flat[i : i + step].size - np.count_nonzero(np.isfinite(flat[i : i + step])))
        for i in range(0, flat.size, step)
    )


def dequantize_weight(
    weight: Weight, q: np.ndarray, scale: np.ndarray, axis: int | None, names: NameAllocator
) -> ir.Node:
    """Swap a float weight for ``DequantizeLinear(q, scale, 0)``: the int8 tensor, scale and
    zero point become initializers, every use reads the node's output, the float
    initializer goes. Returns the node, for the caller to place in the graph."""
    base = weight.name
    q_value = add_initializer(weight.graph, names.new(f"{base}_quantized"), q)
    s_value = add_initializer(weight.graph, names.new(f"{base}_scale"), scale)
    z_value = add_initializer(
        weight.graph, names.new(f"{base}_zero_point"), np.zeros(scale.shape, np.int8)
    )
    attrs = {"axis": axis} if axis is not None else {}
    dq = ir.node(
        "DequantizeLinear",
        [q_value, s_value, z_value],
        attributes=attrs,
        name=names.new(f"{base}_DequantizeLinear"),
    )
    out = dq.outputs[0]
    out.name = names.new(f"{base}_dequantized")
    out.dtype = ir.DataType.FLOAT
    out.shape = ir.Shape(q.shape)
    weight.value.replace_all_uses_with(out)
    if weight.graph.initializers.get(base) is weight.value:
        del weight.graph.initializers[base]
    return dq
