"""``Add(Conv(x, w[, b]), c)`` with a per-channel constant ``c``: ``Conv(x, w, b + c)``.

PaddlePaddle (and Keras via tf2onnx) export a convolution's bias as a separate Add of a
reshaped ``[1, C, 1, 1]`` constant. onnxruntime fuses it at load, but every later pass
sees a float Add after the Conv: int8 placement must requantize around it, and the file
keeps a node and a vector per layer (20 of the PaddleOCR classifier's 44 Adds).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer, const
from onnxcomp.graph.naming import NameAllocator

logger = logging.getLogger(__name__)


def _per_channel(c: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``c`` as a [C] vector when it broadcasts along axis 1 of a rank-``rank`` output."""
    if c.ndim > rank or c.size not in (1, channels):
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if c.size == channels and channels > 1 and shape[1] != channels:
        return None  # varies along another axis (a [C] vector broadcasts over width)
    return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)


def _bias_add(add: ir.Node) -> tuple[ir.Node, np.ndarray] | None:
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
        return None
    for conv_side, const_side in ((0, 1), (1, 0)):
        x, c = add.inputs[conv_side], const(add.inputs[const_side])
        conv = x.producer() if x is not None else None
        if x is None or conv is None or c is None or conv.op_type != "Conv":
            continue
        if conv.graph is not add.graph:
            continue
        if len(x.uses()) != 1 or x.is_graph_output() or c.dtype != np.float32:
            continue
        w = const(conv.inputs[1])
        b = conv.inputs[2] if len(conv.inputs) > 2 else None
        if w is None or (b is not None and const(b) is None):
            continue
        vector = _per_channel(c, w.shape[0], w.ndim)
        if vector is not None:
            return conv, vector
    return None


class FoldConvBiasAddPass(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.folded = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.folded = 0
        names = NameAllocator(model)
        for graph in (model.graph, *model.graph.subgraphs()):
            for add in list(graph):
                found = _bias_add(add)
                if found is not None:
                    self._fold(graph, add, *found, names)
        if self.folded:
            logger.info("folded %d bias Adds into the Conv before them", self.folded)
        return ir.passes.PassResult(model, modified=self.folded > 0)

    def _fold(self, graph, add: ir.Node, conv: ir.Node, vector: np.ndarray, names) -> None:
        old = conv.inputs[2] if len(conv.inputs) > 2 else None
        bias = vector if old is None else const(old).astype(np.float32) + vector  # type: ignore[union-attr]
        base = (old.name if old is not None else None) or f"{conv.name or 'conv'}_bias"
        value = add_initializer(graph, names.new(f"{base}_folded"), bias.astype(np.float32))
        if old is None:
            conv.resize_inputs(3)
        conv.replace_input_with(2, value)
        out, conv_out = add.outputs[0], conv.outputs[0]
        out.replace_all_uses_with(conv_out, replace_graph_outputs=True)
        name = out.name
        graph.remove(add, safe=True)
        conv_out.name = name  # readers keep the tensor name they had
        self.folded += 1
