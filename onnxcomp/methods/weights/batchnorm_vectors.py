"""BatchNormalization that no Conv absorbs, stored as two vectors instead of four.

Pre-activation nets (DenseNet: BN -> Relu -> Conv) keep their BatchNorms; four float
vectors each (scale, bias, mean, var) are a few percent of a file whose weights are
int8 (DenseNet-121 weight-only: 0.276x -> 0.25x). At inference BN is y = a * x + b, so
the same op with mean = var = 0 and scale = a * sqrt(eps) gives the same y; the zero
vector is shared by every BN of the same width. Same op, same kernel, same speed;
values agree to float32 rounding.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer, const
from onnxcomp.graph.naming import NameAllocator

logger = logging.getLogger(__name__)


class BatchNormTwoVectorsPass(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.rewritten: list[str] = []
        self.bytes_saved = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.rewritten, self.bytes_saved = [], 0
        names = NameAllocator(model)
        zeros: dict[tuple[int, int], ir.Value] = {}
        for graph in [model.graph, *model.graph.subgraphs()]:
            for node in list(graph):
                if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx"):
                    continue
                if len(node.outputs) > 1 and any(o.uses() for o in node.outputs[1:]):
                    continue  # training mode outputs in use
                if node.attributes.get_int("training_mode", 0):
                    continue
                params = [const(v, ir.DataType.FLOAT) for v in node.inputs[1:5]]
                if len(params) != 4 or any(p is None or p.ndim != 1 for p in params):
                    continue
                gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
                if np.all(mean == 0) and np.all(var == 0):
                    continue
                eps = node.attributes.get_float("epsilon", 1e-5)
                a = gamma / np.sqrt(var + np.float64(np.float32(eps)))
                b = beta - mean * a
                root = np.float64(np.sqrt(np.float32(eps)))
                scale = (a * root).astype(np.float32)
                bias = b.astype(np.float32)
                key = (id(graph), gamma.size)
                if key not in zeros:
                    zeros[key] = add_initializer(
                        graph, names.new(f"bn_zeros_{gamma.size}"), np.zeros(gamma.size, np.float32)
                    )
                base = node.name or "bn"
                old = list(node.inputs[1:5])
                node.replace_input_with(1, add_initializer(graph, names.new(f"{base}_a"), scale))
                node.replace_input_with(2, add_initializer(graph, names.new(f"{base}_b"), bias))
                node.replace_input_with(3, zeros[key])
                node.replace_input_with(4, zeros[key])
                for value in old:
                    if value is None or value.uses() or value.name is None:
                        continue
                    if graph.initializers.get(value.name) is value:
                        del graph.initializers[value.name]
                        if value.const_value is not None:
                            self.bytes_saved += value.const_value.nbytes
                self.bytes_saved -= 2 * gamma.size * 4
                self.rewritten.append(base)
        if self.rewritten:
            logger.info(
                "%d BatchNorms as two vectors, %d B saved", len(self.rewritten), self.bytes_saved
            )
        return ir.passes.PassResult(model, modified=bool(self.rewritten))
