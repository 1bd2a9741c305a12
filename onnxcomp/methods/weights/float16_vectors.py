"""Small float32 vectors (per-channel scales, biases, norm weights) stored as float16,
and constants float16 holds exactly (anchor grids, strides: int8 would move them).

Once the weights are int8, what is left float is mostly vectors: on the PaddleOCR
direction classifier the decode scales and the biases folded from BatchNorm were 16% of
the int8 file. ``Cast(float16 -> float)`` on an initializer is folded by onnxruntime at
session creation (like the int8 decode), so inference sees float32 constants again.

float16 keeps 11 significant bits: a relative error of at most 2**-11, an eighth of an
int8 weight's own rounding step. A vector is kept float32 when any element would lose
more than that (below float16's normal range, above its maximum, a -3.4e38 mask) or
when it is too short for its bytes to pay for the Cast node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Use, Weight

logger = logging.getLogger(__name__)

MIN_ELEMENTS = 64  # 2 bytes saved per element against ~50 bytes of Cast node and names
MAX_RELATIVE_ERROR = 2.0**-11
# Inputs whose dtype defines the op's output type or that a QDQ fusion reads as float32.
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def exact_enough(array: np.ndarray) -> bool:
    """Every element survives float16 within MAX_RELATIVE_ERROR (zeros stay zeros)."""
    if not np.all(np.isfinite(array)):
        return False
    with np.errstate(over="ignore"):
        half = array.astype(np.float16).astype(np.float32)
    err = np.abs(half - array)
    return bool(np.all(err <= MAX_RELATIVE_ERROR * np.abs(array)))


def exact_in_float16(array: np.ndarray) -> bool:
    """Values float16 holds exactly: structured data (integers, halves: a detector's
    anchor grid and strides), never trained float32 weights, whose mantissas use all
    their bits."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.array_equal(array.astype(np.float16).astype(array.dtype), array))


class StoreVectorsFloat16Pass(ir.passes.InPlacePass):
    """float32 vectors (one axis longer than 1) of at least MIN_ELEMENTS that no Q/DQ
    node reads and ``wanted`` accepts (a layer kept float keeps its bias float32)."""

    def __init__(self, wanted: Callable[[Weight], bool] = lambda w: True) -> None:
        super().__init__()
        self.wanted = wanted
        self.converted: list[str] = []
        self.bytes_saved = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.converted, self.bytes_saved = [], 0
        names = NameAllocator(model)
        for graph in (model.graph, *model.graph.subgraphs()):
            inputs = set(graph.inputs)
            for value in list(graph.initializers.values()):
                if value in inputs or value.is_graph_output() or not self._eligible(value):
                    continue
                uses = [Use(u.node, u.idx, None) for u in value.uses()]
                if not self.wanted(Weight(value, graph, uses)):
                    continue
                self._convert(graph, value, names)
        if self.converted:
            logger.info("%d float vectors stored float16", len(self.converted))
        return ir.passes.PassResult(model, modified=bool(self.converted))

    def _eligible(self, value: ir.Value) -> bool:
        tensor = value.const_value
        if tensor is None or tensor.dtype != ir.DataType.FLOAT:
            return False
        if tensor.size < MIN_ELEMENTS:
            return False
        if sum(d > 1 for d in tensor.shape.numpy()) != 1 and not exact_in_float16(tensor.numpy()):
            return False  # a matrix is a weight: int8 or, if kept out, float32; a grid
            # of exact values (anchors) is float16 without loss
        uses = list(value.uses())
        if not uses or any(
            u.node.op_type in QDQ_OPS or u.node.domain not in ("", "ai.onnx") for u in uses
        ):
            return False  # contrib kernels (MatMulNBits...) read their inputs as float32
        return exact_enough(tensor.numpy())

    def _convert(self, graph: ir.Graph, value: ir.Value, names: NameAllocator) -> None:
        assert value.const_value is not None
        array = value.const_value.numpy()
        base = value.name or "vector"
        half = add_initializer(graph, names.new("h"), array.astype(np.float16))
        cast = ir.node("Cast", [half], attributes={"to": ir.DataType.FLOAT})
        out = cast.outputs[0]
        out.dtype, out.shape = ir.DataType.FLOAT, ir.Shape(array.shape)
        if len(graph) > 0:
            graph.insert_before(next(iter(graph)), cast)
        else:
            graph.append(cast)
        value.replace_all_uses_with(out)
        graph.initializers.pop(value.name or "")
        out.name = value.name  # readers (and debug's name matching) see the same tensor
        self.converted.append(base)
        self.bytes_saved += array.nbytes // 2
