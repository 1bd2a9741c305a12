"""Embedding tables as 4-bit rows read by onnxruntime's GatherBlockQuantized.

``Gather(table [V, D], ids)`` becomes ``com.microsoft.GatherBlockQuantized(int4 [V, D],
ids, scales [V, D / bs])``: onnxruntime's CPU kernel gathers the 4-bit rows and scales
them, so neither the file nor the session ever holds the float table. A 30k-token
vocabulary is most of a small transformer's bytes; int8 rows keep it at a quarter, this
at an eighth. Tables the kernel cannot take (other Gather axes, a width that is not a
multiple of the block, shared with other ops) are left for int8.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.numerics.blocks import max_block_error, quantize_blocks
from onnxcomp.passes.report import QuantRecord

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
MIN_ELEMENTS = 16384


def table_slot(weight: Weight, block_size: int) -> str | None:
    """Why ``weight`` cannot be a GatherBlockQuantized table, or None when it can."""
    if any(u.node.op_type != "Gather" or u.index != 0 for u in weight.uses):
        return None  # not a table: the MatMul/Conv passes speak for it
    shape = weight.value.shape
    if shape is None or len(shape) != 2:
        return "embedding table that is not 2-D: int8 rows"
    const = weight.value.const_value
    size = const.size if const is not None else 0
    if size < MIN_ELEMENTS:
        return f"tiny table ({size} values): int8 rows"
    if shape[1] % block_size:
        return f"row width {shape[1]} not a multiple of the block {block_size}: int8 rows"
    return None


class GatherInt4Pass(ir.passes.InPlacePass):
    """Float embedding tables -> symmetric int4 row blocks behind GatherBlockQuantized."""

    def __init__(
        self, *, block_size: int = 32, include: Callable[[Weight], bool] = lambda w: True
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.include = include
        self.records: list[QuantRecord] = []
        self.skipped: dict[str, str] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.records, self.skipped = [], {}
        names = NameAllocator(model)
        for weight in find_weights(model):
            if weight.value.dtype != ir.DataType.FLOAT or not self.include(weight):
                continue
            if any(u.node.op_type != "Gather" for u in weight.uses):
                continue
            why = table_slot(weight, self.block_size)
            if why is not None:
                self.skipped[weight.name] = why
                continue
            self._rewrite(weight, names)
        if self.records:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
            logger.info("int4 embedding tables: %s", [r.name for r in self.records])
        return ir.passes.PassResult(model, modified=bool(self.records))

    def _rewrite(self, weight: Weight, names: NameAllocator) -> None:
        graph, base = weight.graph, weight.name
        table = weight.array.astype(np.float32)
        # Blocks run along a row: quantize the transpose, whose K axis is the row's width.
        quant = quantize_blocks(np.ascontiguousarray(table.T), self.block_size)
        q = np.ascontiguousarray(quant.q.T).astype(ml_dtypes.int4)
        scale = np.ascontiguousarray(quant.scale.T)
        q_value = add_initializer(graph, names.new(f"{base}_int4"), q)
        s_value = add_initializer(graph, names.new(f"{base}_scale"), scale)
        for use in list(weight.uses):
            gather = use.node
            node = ir.node(
                "GatherBlockQuantized",
                [q_value, gather.inputs[1], s_value],
                attributes={"gather_axis": 0, "quantize_axis": 1, "block_size": self.block_size},
                domain=MS_DOMAIN,
                name=names.new(f"{gather.name or base}_int4"),
            )
            out = node.outputs[0]
            out.dtype = ir.DataType.FLOAT
            out.shape = gather.outputs[0].shape
            graph.insert_before(gather, node)
            old = gather.outputs[0]
            kept = old.name
            old.replace_all_uses_with(out, replace_graph_outputs=True)
            old.name = names.new(f"{kept}_replaced")
            out.name = kept
            graph.remove(gather, safe=True)
        if graph.initializers.get(base) is weight.value and not weight.value.uses():
            del graph.initializers[base]
        stored = -(-q.size // 2) + scale.nbytes
        self.records.append(
            QuantRecord(
                base,
                ["Gather"],
                tuple(table.shape),
                0,
                table.nbytes,
                stored,
                max_block_error(table.T, quant),
                bits=4,
            )
        )
