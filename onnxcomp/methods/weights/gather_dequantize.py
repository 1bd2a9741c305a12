"""Embedding tables: gather the int8 rows first, dequantize only what was gathered.

``Gather(DequantizeLinear(table), ids)`` dequantizes the whole table on every run (a
30k-token vocabulary is tens of MB of float work per inference). Gathering the int8
rows and their per-row scales first gives the same values for the cost of the rows
actually read. Small tables (position, token-type) are left to the decode-at-load
pass instead: onnxruntime turns them back into float constants once, and each lookup is
one float Gather, not four small ops.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator

logger = logging.getLogger(__name__)

# Below this many elements (1 MiB of int8) the float table is cheaper to hold in memory
# than the per-run gather-and-rescale chain.
MIN_TABLE_ELEMENTS = 1 << 20


def _row_dequantize(value: ir.Value | None) -> ir.Node | None:
    """The DequantizeLinear producing ``value`` when it is a symmetric per-row/tensor table."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    if not all(v is not None and v.const_value is not None for v in node.inputs):
        return None
    q, scale = node.inputs[0], node.inputs[1]
    assert q is not None and q.const_value is not None
    assert scale is not None and scale.const_value is not None
    if q.const_value.dtype != ir.DataType.INT8 or len(q.const_value.shape) < 2:
        return None
    if q.const_value.size < MIN_TABLE_ELEMENTS:
        return None
    zero = node.inputs[2] if len(node.inputs) > 2 else None
    if zero is not None and zero.const_value is not None and np.any(zero.const_value.numpy()):
        return None
    per_tensor = scale.const_value.size == 1
    axis = node.attributes.get_int("axis", 1)
    return node if per_tensor or axis == 0 else None


def _gathers_only(value: ir.Value) -> bool:
    uses = list(value.uses())
    return (
        bool(uses)
        and all(
            node.op_type == "Gather" and index == 0 and node.attributes.get_int("axis", 0) == 0
            for node, index in uses
        )
        and not value.is_graph_output()
    )


class GatherBeforeDequantizePass(ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.rewritten: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.rewritten = []
        names = NameAllocator(model)
        for graph in [model.graph, *model.graph.subgraphs()]:
            for dq in list(graph):
                if dq.op_type != "DequantizeLinear" or _row_dequantize(dq.outputs[0]) is None:
                    continue
                if not _gathers_only(dq.outputs[0]):
                    continue
                self.rewritten.append(_name(dq.inputs[0]))
                for gather, _ in list(dq.outputs[0].uses()):
                    _rewrite(gather, dq, names)
        if self.rewritten:
            logger.info("embedding tables gathered before dequantizing: %s", self.rewritten)
        return ir.passes.PassResult(model, modified=bool(self.rewritten))


def _name(value: ir.Value | None) -> str:
    return (value.name if value is not None else None) or ""


def _rewrite(gather: ir.Node, dq: ir.Node, names: NameAllocator) -> None:
    graph = gather.graph
    assert graph is not None
    q, scale = dq.inputs[0], dq.inputs[1]
    assert q is not None and scale is not None and scale.const_value is not None
    ids = gather.inputs[1]
    out = gather.outputs[0]
    base = gather.name or (q.name or "table")
    rows = ir.node("Gather", [q, ids], attributes={"axis": 0}, name=names.new(f"{base}_int8"))
    rows.outputs[0].name = names.new(f"{base}_int8_rows")
    rows.outputs[0].dtype = ir.DataType.INT8
    new_nodes = [rows]
    if scale.const_value.size == 1:
        deq = ir.node("DequantizeLinear", [rows.outputs[0], *dq.inputs[1:]],
                      name=names.new(f"{base}_dequantize"))  # fmt: skip
        new_nodes.append(deq)
        result = deq.outputs[0]
    else:
        column_scale = add_initializer(  # [rows, 1]: gathered rows broadcast over columns
            graph,
            names.new(f"{base}_row_scale_column"),
            scale.const_value.numpy().reshape(-1, *([1] * (len(q.shape or ()) - 1))),
        )
        row_scale = ir.node("Gather", [column_scale, ids], attributes={"axis": 0},
                            name=names.new(f"{base}_row_scale"))  # fmt: skip
        cast = ir.node("Cast", [rows.outputs[0]], attributes={"to": ir.DataType.FLOAT},
                       name=names.new(f"{base}_to_float"))  # fmt: skip
        mul = ir.node("Mul", [cast.outputs[0], row_scale.outputs[0]],
                      name=names.new(f"{base}_rescale"))  # fmt: skip
        for node in (row_scale, cast):
            node.outputs[0].name = names.new(f"{node.name}_out")
        new_nodes += [row_scale, cast, mul]
        result = mul.outputs[0]
    result.dtype = ir.DataType.FLOAT
    result.shape = out.shape
    graph.insert_before(gather, new_nodes)
    out.replace_all_uses_with(result, replace_graph_outputs=True)
    kept = out.name
    out.name = names.new(f"{base}_replaced")
    result.name = kept  # downstream (and debug's name matching) keeps the tensor's name
    graph.remove(gather, safe=True)
    if not dq.outputs[0].uses():
        graph.remove(dq, safe=True)
