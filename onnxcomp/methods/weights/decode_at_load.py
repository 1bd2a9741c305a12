"""int8 storage that onnxruntime decodes once, when the session is created.

A weight behind DequantizeLinear is no constant to onnxruntime: unless an int8 kernel
fuses it (a QDQ Conv/MatMul, MatMulNBits), it is dequantized on every run and its op
loses weight prepacking (weight-only Conv nets ran at 0.77x fp32). ``Cast(int8) * scale``
on initializers is constant-folded at session creation (onnxruntime 1.18-1.32, inside
If/Loop bodies too), so the file keeps one byte per weight and inference runs at fp32
speed and fp32 memory.

Two passes: ``DecodeAtLoadPass`` turns weight DequantizeLinear nodes that no int8 kernel
will fuse into that form; ``StoreConstantsInt8Pass`` stores every other big float
constant (LSTM/GRU weights, tensors read by Slice/Add/Unsqueeze...) the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer, all_graphs, const, insert_at_front
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Use, Weight
from onnxcomp.methods.weights.float16_vectors import exact_in_float16
from onnxcomp.numerics.scales import max_rounding_error, quantize_weight_symmetric
from onnxcomp.passes.report import QuantRecord

logger = logging.getLogger(__name__)

# Smaller float constants (scales, norms, scalars) are kept: their bytes do not matter
# and some (masks, epsilons) must stay exact.
MIN_ELEMENTS = 1024
# Ops whose inputs are graph metadata: a float tensor there is no weight.
SHAPE_READERS = {"Shape", "Size", "ConstantOfShape", "Range"}
# onnxruntime's 8-bit MatMulNBits only beats fp32 MatMul on big weights (1 thread, ORT
# 1.32: 1024x1024 1.5-1.8x, 384x1536 1.05-1.5x, 384x384 0.94-1.10x, 256x256 0.87-0.98x,
# 64x512 0.54-0.91x for 1-128 rows): smaller int8 MatMul/Gemm weights are decoded at load.
NBITS_MIN_ELEMENTS = 1 << 18
NBITS_MIN_K = 128
# onnxruntime fuses these into a Gemm/MatMul before DQ -> MatMulNBits gets its turn
# (1.32: FusedGemm, MatMul + Relu), so such a weight would be dequantized on every run.
ACTIVATION_FUSED = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "Softplus",
    "Softsign", "ThresholdedRelu", "Clip",
}  # fmt: skip


def nbits_blocked(reader: ir.Node) -> bool:
    """Whether an activation fusion keeps onnxruntime from fusing ``reader`` into MatMulNBits."""
    uses = list(reader.outputs[0].uses()) if reader.outputs else []
    return any(use.node.op_type in ACTIVATION_FUSED for use in uses)


# Scales and zero points of (block) quantization are already the compact form.
QDQ = {"DequantizeLinear", "QuantizeLinear", "GatherBlockQuantized", "MatMulNBits"}


def decode_nodes(
    graph: ir.Graph, q: ir.Value, scale: np.ndarray, axis: int | None, names: NameAllocator,
    base: str, shape: tuple[int, ...],
) -> tuple[list[ir.Node], ir.Value]:  # fmt: skip
    """Cast(q) * scale, with the scale shaped to broadcast along ``axis``.

    Only the decoded weight gets a telling name (``rename_decoded`` gives it the original
    one); the plumbing between gets short ones and the nodes none: long exporter names
    repeated ten times per weight were a tenth of a small int8 conv net's file."""
    if axis is not None and scale.size > 1:
        bshape = [1] * len(shape)
        bshape[axis] = scale.size
        scale = scale.reshape(bshape)
    s_value = add_initializer(graph, names.new("s"), scale.astype(np.float32))
    cast = ir.node("Cast", [q], attributes={"to": ir.DataType.FLOAT})
    cast.outputs[0].name = names.new("c")
    cast.outputs[0].dtype = ir.DataType.FLOAT
    cast.outputs[0].shape = ir.Shape(shape)
    mul = ir.node("Mul", [cast.outputs[0], s_value])
    out = mul.outputs[0]
    out.name = names.new(f"{base}_decoded")
    out.dtype = ir.DataType.FLOAT
    out.shape = ir.Shape(shape)
    return [cast, mul], out


def rename_decoded(model: ir.Model, pending: list[tuple[ir.Value, str]]) -> None:
    """Give each decoded weight its original name once the float tensor is gone (names are
    unique across all graphs), so readers, inspect and debug see the weight they know.

    One sweep over every graph for all of a pass's weights: a sweep per weight cost
    seconds on a 300-weight model, paid again by each candidate of the int8 measure step."""
    if not pending:
        return
    live: set[str] = set()
    for graph in all_graphs(model.graph):
        live.update(v.name for v in (*graph.inputs, *graph.outputs) if v.name)
        live.update(graph.initializers)
        live.update(o.name for n in graph for o in n.outputs if o.name)
    for out, base in pending:
        if base not in live:
            live.discard(out.name or "")
            out.name = base
            live.add(base)


class DecodeAtLoadPass(ir.passes.InPlacePass):
    """Weight DequantizeLinear -> Cast * scale where no int8 kernel will read it.

    A reader keeps the DequantizeLinear when its activation input is itself dequantized
    (onnxruntime fuses the QDQ group into an int8 kernel) or its op type is in
    ``keep_ops`` (weight-only MatMul/Gemm: fused into MatMulNBits) and the weight is big
    enough for MatMulNBits to pay (NBITS_MIN_ELEMENTS)."""

    def __init__(self, keep_ops: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.keep_ops = keep_ops
        self.converted: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.converted = []
        self._renames: list[tuple[ir.Value, str]] = []
        names = NameAllocator(model)
        cursors: dict[int, ir.Node] = {}
        for graph in list(all_graphs(model.graph)):
            for node in list(graph):
                if self._convertible(node):
                    self._convert(graph, node, names, cursors)
        rename_decoded(model, self._renames)
        if self.converted:
            logger.info("%d int8 weights decoded at load instead of per run", len(self.converted))
        return ir.passes.PassResult(model, modified=bool(self.converted))

    def _convertible(self, node: ir.Node) -> bool:
        if node.op_type != "DequantizeLinear" or node.domain != "":
            return False
        q, scale = const(node.inputs[0]), const(node.inputs[1])
        if q is None or scale is None or q.dtype != np.int8:
            return False
        zero = const(node.inputs[2]) if len(node.inputs) > 2 else None
        if zero is not None and np.any(zero):
            return False
        if node.attributes.get_int("block_size", 0):
            return False
        out = node.outputs[0]
        if out.is_graph_output() or not out.uses():
            return False
        return not any(self._fused(use.node, q, out) for use in out.uses())

    def _fused(self, reader: ir.Node, q: np.ndarray, weight: ir.Value) -> bool:
        if reader.op_type in self.keep_ops:
            k = q.shape[0] if q.ndim == 2 else 0
            if reader.op_type == "Gemm" and bool(reader.attributes.get_int("transB", 0)):
                return False  # not fused by onnxruntime: decoded here (or see gemm_nbits_layout)
            if nbits_blocked(reader):
                return False
            return q.size >= NBITS_MIN_ELEMENTS and k >= NBITS_MIN_K
        # An int8 kernel reads a dequantized activation beside the weight. A Gather reads
        # the weight as its *data* input: nothing fuses there, it is decoded at load.
        data = reader.inputs[0] if reader.inputs else None
        if data is None or data is weight:
            return False
        producer = data.producer()
        return producer is not None and producer.op_type == "DequantizeLinear"

    def _convert(
        self, graph: ir.Graph, dq: ir.Node, names: NameAllocator, cursors: dict[int, ir.Node]
    ) -> None:
        q_value = dq.inputs[0]
        assert q_value is not None and q_value.const_value is not None
        scale = dq.inputs[1].const_value.numpy()  # type: ignore[union-attr]
        shape = tuple(q_value.const_value.shape.numpy())
        axis = dq.attributes.get_int("axis", 1) if scale.size > 1 else None
        if axis is not None and axis < 0:
            axis += len(shape)
        base = (q_value.name or "weight").removesuffix("_quantized")
        nodes, out = decode_nodes(graph, q_value, scale, axis, names, base, shape)
        for added in nodes:
            insert_at_front(graph, added, cursors)
        dq.outputs[0].replace_all_uses_with(out)
        graph.remove(dq, safe=True)
        self._renames.append((out, base))
        self.converted.append(base)


class StoreConstantsInt8Pass(ir.passes.InPlacePass):
    """Every remaining big float32 constant -> int8 rows + scales, decoded at load.

    Rows are the first axis longer than one (an LSTM's [1, 4H, I] gets one scale per
    gate row). Tensors with non-finite values, effectively one-dimensional vectors
    (biases, norms), graph outputs and tensors read as shapes are kept float."""

    def __init__(self, include: Callable[[Weight], bool] = lambda w: True) -> None:
        super().__init__()
        self.include = include
        self.records: list[QuantRecord] = []
        self.skipped: dict[str, str] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.records, self.skipped = [], {}
        self._renames: list[tuple[ir.Value, str]] = []
        names = NameAllocator(model)
        cursors: dict[int, ir.Node] = {}
        for graph in list(all_graphs(model.graph)):
            for value in list(graph.initializers.values()):
                self._store(graph, value, names, cursors)
        rename_decoded(model, self._renames)
        if self.records:
            before = sum(r.bytes_before for r in self.records)
            after = sum(r.bytes_after for r in self.records)
            logger.info("stored %d constants int8: %d -> %d B", len(self.records), before, after)
        return ir.passes.PassResult(model, modified=bool(self.records))

    def _store(
        self, graph: ir.Graph, value: ir.Value, names: NameAllocator, cursors: dict[int, ir.Node]
    ) -> None:
        tensor = value.const_value
        if tensor is None or value.dtype != ir.DataType.FLOAT or tensor.size < MIN_ELEMENTS:
            return
        if value.is_graph_input() or value.is_graph_output() or not value.uses():
            return
        uses = list(value.uses())
        if any(u.node.op_type in SHAPE_READERS or u.node.op_type in QDQ for u in uses):
            return
        shape = tuple(tensor.shape.numpy())
        long_axes = [i for i, d in enumerate(shape) if d > 1]
        if len(long_axes) < 2:
            return
        weight = Weight(value, graph, [Use(u.node, u.idx, None) for u in uses])
        if not self.include(weight):
            self.skipped[value.name or ""] = "excluded"
            return
        array = tensor.numpy()
        if not np.isfinite(array).all():
            self.skipped[value.name or ""] = "holds inf or NaN; kept float"
            return
        if exact_in_float16(array):
            # Grids and ranges (a detector's anchor points 0.5 .. 127.5, its strides):
            # int8 rows would move each by up to half a step, every box with them.
            self.skipped[value.name or ""] = "exact grid values (anchors, ranges); kept float"
            return
        axis = long_axes[0]
        q, scale = quantize_weight_symmetric(array, axis)
        error = max_rounding_error(array, q, scale, axis)
        base = value.name or "constant"
        q_value = add_initializer(graph, names.new(f"{base}_quantized"), q)
        nodes, out = decode_nodes(graph, q_value, scale, axis, names, base, shape)
        for added in nodes:
            insert_at_front(graph, added, cursors)
        value.replace_all_uses_with(out)
        if graph.initializers.get(base) is value:
            del graph.initializers[base]
        self._renames.append((out, base))
        self.records.append(
            QuantRecord(
                base,
                sorted({u.node.op_type for u in uses}),
                shape,
                axis,
                array.nbytes,
                q.nbytes + scale.nbytes,
                error,
            )
        )
