"""Weight MatMul/Gemm with activations quantized at run time (per batch, no calibration).

``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(a_scale * w_scale) [-> Add bias]``
is plain ONNX; onnxruntime fuses it at load into ``MatMulIntegerToFloat`` (bias included)
and, when the quantized input has no other reader, into ``DynamicQuantizeMatMul``. On a
transformer this beats static Q/DQ: no QuantizeLinear node per MatMul input and the bias
Add disappears into the kernel (the MiniLM export: 26 float Adds left with static int8).
The range is the batch's own, so nothing is clipped by a calibration set that was too
narrow. The int8 measure step chooses this form only where it measures faster.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer, const
from onnxcomp.graph.naming import NameAllocator


def _weight(node: ir.Node, value: ir.Value | None, axis_wanted: int) -> tuple | None:
    """(int8 weight, per-column scale) of a symmetric weight DequantizeLinear, else None."""
    dq = value.producer() if value is not None else None
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain not in ("", "ai.onnx"):
        return None
    q, scale = const(dq.inputs[0]), const(dq.inputs[1])
    zero = const(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    if q is None or scale is None or q.dtype != np.int8 or q.ndim != 2:
        return None
    if zero is not None and np.any(zero != 0):
        return None
    if scale.size > 1 and dq.attributes.get_int("axis", 1) % 2 != axis_wanted:
        return None
    return q, scale.astype(np.float32).reshape(-1)


def _candidate(node: ir.Node) -> tuple[ir.Value, np.ndarray, np.ndarray] | None:
    """(activation, int8 [K, N] weight, scale of size 1 or N) of a rewritable node."""
    if node.domain not in ("", "ai.onnx") or not node.outputs:
        return None
    if node.outputs[0].dtype != ir.DataType.FLOAT:
        return None
    a = node.inputs[0]
    if a is None or a.dtype != ir.DataType.FLOAT or a.const_value is not None:
        return None
    if node.op_type == "MatMul":
        found = _weight(node, node.inputs[1], axis_wanted=1)
        return (a, *found) if found is not None else None
    if node.op_type != "Gemm" or node.attributes.get_int("transA", 0) != 0:
        return None
    if node.attributes.get_float("alpha", 1.0) != 1.0:
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and (node.attributes.get_float("beta", 1.0) != 1.0 or const(bias) is None):
        return None
    trans_b = node.attributes.get_int("transB", 0)
    found = _weight(node, node.inputs[1], axis_wanted=0 if trans_b else 1)
    if found is None:
        return None
    q, scale = found
    return a, (np.ascontiguousarray(q.T) if trans_b else q), scale


def dynamic_candidates(model: ir.Model) -> dict[str, int]:
    """How many nodes the pass would rewrite, by op type."""
    found: dict[str, int] = {}
    for graph in (model.graph, *model.graph.subgraphs()):
        for n in graph:
            if n.op_type in ("MatMul", "Gemm") and _candidate(n):
                found[n.op_type] = found.get(n.op_type, 0) + 1
    return found


class DynamicMatMulPass(ir.passes.InPlacePass):
    """Rewrite MatMul/Gemm nodes that read a symmetric int8 weight, in every graph (no
    calibration is needed, so weights inside If/Loop bodies get int8 compute too)."""

    def __init__(
        self,
        op_types: frozenset[str] = frozenset({"MatMul", "Gemm"}),
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.op_types, self.exclude = op_types, exclude
        self.rewritten: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        names = NameAllocator(model)
        self.rewritten = []
        for graph in (model.graph, *model.graph.subgraphs()):
            self._graph(graph, names)
        return ir.passes.PassResult(model, modified=bool(self.rewritten))

    def _graph(self, graph: ir.Graph, names: NameAllocator) -> None:
        quantized: dict[ir.Value, ir.Node] = {}  # activation -> its DynamicQuantizeLinear
        for node in list(graph):
            if node.op_type not in self.op_types or {node.name, node.op_type} & self.exclude:
                continue
            found = _candidate(node)
            if found is None:
                continue
            a, q, scale = found
            dql = quantized.get(a)
            if dql is None:
                dql = self._quantizer(graph, node, a, names)
                quantized[a] = dql
            self.rewritten.append(node.name or node.op_type)
            self._rewrite(graph, node, dql, q, scale, names)

    def _quantizer(self, graph: ir.Graph, node: ir.Node, a: ir.Value, names) -> ir.Node:
        base = a.name or "x"
        dql = ir.node("DynamicQuantizeLinear", [a], num_outputs=3, name=names.new(f"{base}_DQL"))
        for out, suffix, dtype in zip(
            dql.outputs,
            ("quantized", "scale", "zero_point"),
            (ir.DataType.UINT8, ir.DataType.FLOAT, ir.DataType.UINT8),
            strict=True,
        ):
            out.name, out.dtype = names.new(f"{base}_dyn_{suffix}"), dtype
        dql.outputs[0].shape = a.shape
        dql.outputs[1].shape = dql.outputs[2].shape = ir.Shape([])
        producer = a.producer()
        if producer is not None and producer.graph is graph:
            graph.insert_after(producer, dql)
        else:
            graph.insert_before(node, dql)
        return dql

    def _rewrite(self, graph, node: ir.Node, dql: ir.Node, q, scale, names) -> None:
        base = node.name or node.op_type
        out = node.outputs[0]
        weight = add_initializer(graph, names.new(f"{base}_weight_int8"), q)
        w_scale = add_initializer(graph, names.new(f"{base}_weight_scale"), scale)
        mm = ir.node(
            "MatMulInteger", [dql.outputs[0], weight, dql.outputs[2]], name=names.new(base)
        )
        cast = ir.node("Cast", mm.outputs, attributes={"to": ir.DataType.FLOAT},
                       name=names.new(f"{base}_Cast"))  # fmt: skip
        product = ir.node("Mul", [dql.outputs[1], w_scale], name=names.new(f"{base}_scale"))
        mul = ir.node("Mul", [cast.outputs[0], product.outputs[0]], name=names.new(f"{base}_Mul"))
        mm.outputs[0].dtype = ir.DataType.INT32
        cast.outputs[0].dtype = product.outputs[0].dtype = ir.DataType.FLOAT
        for v, suffix in ((mm.outputs[0], "int32"), (cast.outputs[0], "float"),
                          (product.outputs[0], "scale_product")):  # fmt: skip
            v.name = names.new(f"{base}_{suffix}")
        new = [mm, cast, product, mul]
        result = mul.outputs[0]
        bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        if bias is not None:
            add = ir.node("Add", [result, bias], name=names.new(f"{base}_bias"))
            mul.outputs[0].name = names.new(f"{base}_scaled")
            new.append(add)
            result = add.outputs[0]
        else:
            mul.outputs[0].name = names.new(f"{base}_scaled")
            _bias_second(out)
        result.dtype, result.shape = ir.DataType.FLOAT, out.shape
        graph.insert_before(node, new)
        out.replace_all_uses_with(result, replace_graph_outputs=True)
        name = out.name
        out.name = names.new(f"{base}_replaced")
        graph.remove(node, safe=True)
        result.name = name


def _bias_second(out: ir.Value) -> None:
    """onnxruntime folds a bias Add into the kernel only when the bias is the Add's second
    input; exporters often write ``Add(bias, x)``. Addition commutes: swap them."""
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return
    add, idx = uses[0].node, uses[0].idx
    if add.op_type != "Add" or idx != 1 or len(add.inputs) != 2:
        return
    bias = const(add.inputs[0])
    if bias is None or bias.ndim < 1 or bias.shape[-1] <= 1 or any(d != 1 for d in bias.shape[:-1]):
        return
    first = add.inputs[0]
    add.replace_input_with(0, out)
    add.replace_input_with(1, first)
