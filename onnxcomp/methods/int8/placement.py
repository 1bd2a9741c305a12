"""Where activations get QuantizeLinear/DequantizeLinear so onnxruntime runs int8 kernels.

A Q/DQ pair pays only where the runtime fuses it into a QLinear*/QGemm/MatMulInteger
kernel, or lets an op run on int8 data. The rules follow onnxruntime's QDQ selectors:

* compute (Conv, MatMul, Gemm with an int8 weight): always int8; inputs quantized.
  Conv needs its output quantized; MatMul/Gemm may keep a float output.
* requant (Add, Mul, Concat, AveragePool, GlobalAveragePool, LeakyRelu, Sigmoid):
  only when every input is already int8 and an int8 op reads the result, otherwise a
  float op is cheaper than quantizing its inputs; a pool that shrinks its input needs
  no int8 reader (dequantizing its smaller output is the cheaper side).
* shape (Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Slice, Gather, Expand, Tile,
  Resize, MaxPool, Split): run on int8 with their input's scale, no requantization.
* Relu/Clip right after a quantized op fold into its output range (zero point = lowest
  code), so the runtime drops them.

Everything else (LayerNorm chains, Softmax, Pow/Sqrt/Div, ai.onnx.ml, subgraphs) stays
float, and so does any node whose output is a graph output (except MatMul/Gemm, whose
fused kernels return float).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_ir as ir

COMPUTE = {"Conv": "conv", "MatMul": "matmul", "Gemm": "gemm"}
REQUANT = {
    "Add": "add",
    "Mul": "mul",
    "Concat": "concat",
    "AveragePool": "pool",
    "GlobalAveragePool": "pool",
    "LeakyRelu": "activation",
    "Sigmoid": "activation",
    "Softmax": "softmax",
}
SHAPE_OPS = {
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Gather",
    "GatherElements",
    "Expand",
    "Tile",
    "Resize",
    "MaxPool",
    "Split",
}
FOLDABLE = ("Relu", "Clip")
FLOAT_OUTPUT_OK = ("matmul", "matmul_act", "gemm")
# Softmax in uint8 loses the small probabilities attention relies on: off unless asked.
DEFAULT_FAMILIES = frozenset(
    {"conv", "matmul", "matmul_act", "gemm", "add", "mul", "concat", "pool", "activation", "shape"}
)


@dataclass
class QdqPlan:
    """Quantized nodes (with their op family) and the tensors that get a Q/DQ pair."""

    nodes: dict[ir.Node, str] = field(default_factory=dict)
    roots: list[ir.Value] = field(default_factory=list)  # own calibrated scale
    shared: dict[ir.Value, ir.Value] = field(default_factory=dict)  # value -> root it reuses
    kept_float: dict[str, str] = field(default_factory=dict)  # node name -> why
    decoded_at_load: int = 0  # int8 weights of float ops, decoded by onnxruntime at load
    dynamic: list[str] = field(default_factory=list)  # MatMul/Gemm quantized at run time

    @property
    def families(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for fam in self.nodes.values():
            counts[fam] = counts.get(fam, 0) + 1
        return counts


def _is_const(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is not None and not value.is_graph_input()


def _producer_op(value: ir.Value | None) -> str | None:
    node = value.producer() if value is not None else None
    return node.op_type if node is not None else None


def _float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype == ir.DataType.FLOAT


def _weight_dq(value: ir.Value | None) -> bool:
    """A weight rewritten by QuantizeWeightsPass: DequantizeLinear of an int8 constant."""
    node = value.producer() if value is not None else None
    return (
        node is not None
        and node.op_type == "DequantizeLinear"
        and _is_const(node.inputs[0])
        and node.inputs[0].dtype == ir.DataType.INT8
    )


def family_of(node: ir.Node) -> tuple[str | None, str]:
    """(family, "") when the node can run int8, else (None, reason)."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None, f"custom domain {node.domain}"
    if not node.outputs or not _float(node.outputs[0]):
        return None, "output is not float32"
    if op == "Conv":
        if not _weight_dq(node.inputs[1]):
            return None, "weight not quantized"
        if len(node.inputs) > 2 and node.inputs[2] is not None and not _is_const(node.inputs[2]):
            return None, "bias is not a constant"
        return "conv", ""
    if op == "Gemm":
        if not _weight_dq(node.inputs[1]) or node.attributes.get_int("transA", 0):
            return None, "weight not quantized"
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and not (_is_const(bias) and len(bias.const_value.shape) == 1):
            return None, "bias is not a 1-D constant"
        if bias is not None and node.attributes.get_float("beta", 1.0) != 1.0:
            return None, "beta != 1"
        return "gemm", ""
    if op == "MatMul":
        a, b = node.inputs
        if _weight_dq(b):
            shape = b.shape
            if shape is None or len(shape) != 2 or _is_const(a) or _weight_dq(a):
                return None, "weight is not a 2-D matrix"
            return "matmul", ""
        if _float(a) and _float(b) and not _is_const(a) and not _is_const(b):
            if _weight_dq(a):
                return None, "weight on the left"
            return "matmul_act", ""
        return None, "float weight"
    if op in REQUANT:
        data = [v for v in node.inputs if v is not None]
        if op in ("Add", "Mul") and len(data) != 2:
            return None, "not binary"
        if not all(_float(v) for v in data):
            return None, "non-float input"
        if all(_is_const(v) for v in data):
            return None, "constant"
        return REQUANT[op], ""
    if op in SHAPE_OPS:
        if not node.inputs or not _float(node.inputs[0]) or _is_const(node.inputs[0]):
            return None, "no float activation input"
        if _weight_dq(node.inputs[0]):
            return None, "reads a weight"
        return "shape", ""
    return None, "no int8 kernel"


def _shrinks(node: ir.Node) -> bool:
    """A pooling op that writes fewer values than it reads pays in int8 even for a float
    reader: the DequantizeLinear moves after it, onto the smaller tensor (SqueezeNet's
    GlobalAveragePool head: 169x fewer values to dequantize)."""
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type == "AveragePool":
        return any(s > 1 for s in node.attributes.get_ints("strides", ()))
    return False


def _excluded(node: ir.Node, exclude: set[str]) -> bool:
    return node.name in exclude or node.op_type in exclude


def _fold_target(node: ir.Node, graph: ir.Graph) -> ir.Node | None:
    """The Relu/Clip whose output carries this node's int8 result, if any."""
    out = node.outputs[0]
    users = out.uses()
    if len(users) != 1 or out.is_graph_output():
        return None
    user = users[0].node
    if user.op_type not in FOLDABLE or user.graph is not graph or users[0].idx != 0:
        return None
    if user.outputs[0].is_graph_output():
        return None
    if user.op_type == "Clip" and not all(_is_const(v) for v in user.inputs[1:] if v is not None):
        return None
    return user


def plan_qdq(
    model: ir.Model,
    *,
    exclude: Iterable[str] = (),
    families: Iterable[str] = DEFAULT_FAMILIES,
) -> QdqPlan:
    """Decide which main-graph nodes run int8 and which tensors need Q/DQ."""
    graph = model.graph
    wanted, excl = set(families), set(exclude)
    plan = QdqPlan()
    kept: dict[ir.Node, str] = {}
    for node in graph:
        fam, why = family_of(node)
        if fam is None:
            if why != "no int8 kernel" and node.op_type not in FOLDABLE:
                plan.kept_float[node.name or node.op_type] = why
            continue
        if _excluded(node, excl):
            plan.kept_float[node.name or node.op_type] = "excluded by --exclude"
        elif fam not in wanted:
            plan.kept_float[node.name or node.op_type] = f"{fam} kept float"
        elif node.outputs[0].is_graph_output() and not (fam in FLOAT_OUTPUT_OK or _shrinks(node)):
            plan.kept_float[node.name or node.op_type] = "produces a graph output"
        else:
            kept[node] = fam
    folds = {n: _fold_target(n, graph) if f != "shape" else None for n, f in kept.items()}

    def out_value(node: ir.Node) -> ir.Value:
        target = folds.get(node)
        return target.outputs[0] if target is not None else node.outputs[0]

    def readers(node: ir.Node) -> list[ir.Node]:
        return [u.node for u in out_value(node).uses()]

    def output_quantized(node: ir.Node) -> bool:
        if kept[node] in FLOAT_OUTPUT_OK:
            v = out_value(node)
            return not v.is_graph_output() and any(r in kept for r in readers(node))
        return True

    def int8_input(value: ir.Value) -> bool:
        node = value.producer()
        if node is not None and node.op_type in FOLDABLE and node.inputs[0] is not None:
            inner = node.inputs[0].producer()
            if inner is not None and inner in kept and folds.get(inner) is node:
                return output_quantized(inner)
            return False
        return (
            node is not None
            and node in kept
            and folds.get(node) is None
            and (output_quantized(node))
        )

    changed = True
    while changed:
        changed = False
        for node, fam in list(kept.items()):
            if fam in COMPUTE.values() or fam == "matmul_act":
                continue
            acts = (
                [v for v in node.inputs[:1] if v is not None]
                if fam == "shape"
                else [v for v in node.inputs if v is not None and not _is_const(v)]
            )
            ok = all(int8_input(v) for v in acts)
            ok = ok and (any(r in kept for r in readers(node)) or _shrinks(node))
            if not ok:
                del kept[node]
                reason = (
                    "inputs not int8"
                    if not all(int8_input(v) for v in acts)
                    else ("no int8 reader")
                )
                plan.kept_float[node.name or node.op_type] = f"{fam}: {reason}"
                changed = True
    plan.nodes = kept
    _assign_tensors(plan, kept, out_value, output_quantized, int8_input)
    return plan


def _assign_tensors(plan: QdqPlan, kept, out_value, output_quantized, int8_input) -> None:
    """Roots get their own scale; a shape op's output reuses its input's."""
    seen: set[ir.Value] = set()

    def root_of(value: ir.Value) -> ir.Value:
        while value in plan.shared:
            value = plan.shared[value]
        return value

    for node in kept:  # graph order: producers before consumers
        fam = kept[node]
        if fam == "shape":
            inputs = [node.inputs[0]]
        else:
            inputs = [v for v in node.inputs if v is not None and not _is_const(v)]
            if fam in ("conv", "gemm", "matmul"):
                inputs = [node.inputs[0]]
        for v in inputs:
            if v not in seen:
                seen.add(v)
                plan.roots.append(v)
        if not output_quantized(node):
            continue
        for out in (
            [out_value(node)] if fam != "shape" or node.op_type != "Split" else list(node.outputs)
        ):
            if out in seen:
                continue
            seen.add(out)
            if fam == "shape":
                plan.shared[out] = root_of(node.inputs[0])
            else:
                plan.roots.append(out)
    # a shape op's output may have been listed as some reader's input before we knew
    plan.roots = [v for v in plan.roots if v not in plan.shared]
