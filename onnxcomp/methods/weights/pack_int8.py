"""``--pack`` for int8 weights: a pruned (or few-valued) int8 tensor stored packed.

The distinct int8 values become a small table and each element a code into it, stored in
the smallest form pack.py knows (bit-packed, bitmask or gap-coded sparse, 0 as code 0).
The decode ends in ``Gather(table, codes)`` on initializers only: onnxruntime folds it at
session creation, so DequantizeLinear (or the decode-at-load Cast) reads a constant int8
tensor again and the int8 kernels fuse as they do on the unpacked file, bit for bit.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import all_graphs, insert_at_front
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.methods.codebook.pack import Emitter, choose, emit_codes
from onnxcomp.methods.weights.decode_at_load import rename_decoded

MIN_ELEMENTS = 1024  # below this the decode chain costs more than it saves


class PackInt8Pass(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.saved = 0  # bytes
        self.packed: list[tuple[str, str]] = []  # (tensor, form)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.saved, self.packed = 0, []
        names = NameAllocator(model)
        pool: dict = {}
        cursors: dict[int, ir.Node] = {}
        self._renames: list[tuple[ir.Value, str]] = []
        for graph in list(all_graphs(model.graph)):
            for value in list(graph.initializers.values()):
                self._pack(model, graph, value, names, pool, cursors)
        rename_decoded(model, self._renames)
        return ir.passes.PassResult(model, modified=bool(self.packed))

    def _pack(
        self,
        model: ir.Model,
        graph: ir.Graph,
        value: ir.Value,
        names: NameAllocator,
        pool: dict,
        cursors: dict[int, ir.Node],
    ) -> None:
        tensor = value.const_value
        if tensor is None or value.dtype != ir.DataType.INT8 or tensor.size < MIN_ELEMENTS:
            return
        if value.is_graph_input() or value.is_graph_output() or not value.uses():
            return
        array = tensor.numpy()
        table, codes = np.unique(array, return_inverse=True)
        zero = None
        if table[0] <= 0 <= table[-1] and 0 in table:  # 0 becomes code 0: it packs to nothing
            order = np.array([int(np.searchsorted(table, 0))] + [
                i for i in range(table.size) if table[i] != 0
            ])  # fmt: skip
            codes = np.argsort(order)[codes]
            table, zero = table[order], 0
        codes = codes.reshape(array.shape).astype(np.uint8)
        form = choose(codes, zero, True)
        if form.kind == "plain" or form.nbytes + table.nbytes >= array.nbytes:
            return
        base = value.name or "weight"
        em = Emitter(graph, names, base, pool)
        decoded = emit_codes(em, codes, form)
        out = em.op(
            "Gather", [em.const("table", table.astype(np.int8)), decoded], ir.DataType.INT8,
            array.shape, "decoded", axis=0,
        )  # fmt: skip
        for added in em.nodes:
            insert_at_front(graph, added, cursors)
        out.dtype, out.shape = ir.DataType.INT8, ir.Shape(array.shape)
        value.replace_all_uses_with(out)
        if graph.initializers.get(base) is value:
            del graph.initializers[base]
        self._renames.append((out, base))
        self.saved += array.nbytes - form.nbytes - table.nbytes
        self.packed.append((base, form.describe()))
