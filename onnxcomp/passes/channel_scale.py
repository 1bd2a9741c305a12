"""Move magnitude between an activation's channels and the weights that read it.

``X @ W == (X / s) @ (diag(s) @ W)`` for any positive per-channel ``s``: exact in float,
but not after rounding. AWQ (int4 weights) scales up the rows of W that meet large
activations, so their rounding error counts less; SmoothQuant (int8 activations) divides
outlier channels of X down, so one activation scale fits them all. Both are this edit;
only the choice of ``s`` differs (methods/int4/awq.py, methods/int8/smoothquant.py).

The ``1 / s`` goes where it costs nothing when it can: into a Mul by a constant that makes
X (GELU's last ``* 0.5``) or LayerNormalization's scale and bias, when the weights' ops
are X's only readers. Else a ``Mul(X, 1 / s)`` is inserted in front of those readers
(one elementwise op per group; a residual branch reading X keeps the original).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Weight


@dataclass
class ScaleGroup:
    """The MatMul/Gemm weights that read one activation ``x`` as their A input."""

    x: ir.Value
    weights: list[Weight]

    @property
    def name(self) -> str:
        return self.x.name or "?"


def reads_as_b(weight: Weight) -> bool:
    """``weight`` is the B of a single MatMul/Gemm whose A is an activation (no transA)."""
    if len(weight.uses) != 1 or len(list(weight.value.uses())) != 1:
        return False
    use = weight.uses[0]
    node = use.node
    if node.op_type not in ("MatMul", "Gemm") or use.index != 1:
        return False
    if node.op_type == "Gemm" and bool(node.attributes.get_int("transA", 0)):
        return False
    shape = weight.value.shape
    x = node.inputs[0]
    return shape is not None and len(shape) == 2 and x is not None and not x.is_initializer()


def scale_groups(weights: list[Weight]) -> list[ScaleGroup]:
    """Group ``weights`` (each passing ``reads_as_b``) by the activation they read."""
    groups: dict[int, ScaleGroup] = {}
    for weight in weights:
        if weight.value.dtype != ir.DataType.FLOAT or not reads_as_b(weight):
            continue
        x = weight.uses[0].node.inputs[0]
        assert x is not None
        groups.setdefault(id(x), ScaleGroup(x, [])).weights.append(weight)
    return list(groups.values())


def weight_kn(weight: Weight) -> np.ndarray:
    """The weight as [K, N] (K: the input channels s scales)."""
    array = weight.array.astype(np.float32)
    node = weight.uses[0].node
    if node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0)):
        return array.T
    return array


def apply_scale(
    group: ScaleGroup, s: np.ndarray, names: NameAllocator, *, allow_mul: bool = True
) -> str | None:
    """Scale the group's weights by ``s`` per input channel and X by ``1 / s``; says where
    ``1 / s`` went. Without ``allow_mul``, only where it folds into X's producer (None and
    nothing changed otherwise): an inserted Mul is a float op the original did not run."""
    s = np.asarray(s, np.float32)
    readers = {id(w.uses[0].node) for w in group.weights}
    only_readers = not group.x.is_graph_output() and all(
        id(n) in readers for n, _ in group.x.uses()
    )
    where = _fold(group.x, 1.0 / s, names) if only_readers else None
    if where is None and not allow_mul:
        return None
    for weight in group.weights:
        node = weight.uses[0].node
        trans = node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0))
        array = weight.array.astype(np.float32)
        scaled = array * (s[None, :] if trans else s[:, None])
        weight.value.const_value = ir.tensor(scaled, name=weight.name)
    if where is not None:
        return where
    _insert_mul(group, 1.0 / s, names)
    return "Mul inserted"


def _fold(x: ir.Value, inv: np.ndarray, names: NameAllocator) -> str | None:
    node = x.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Mul":
        for i in (0, 1):
            c = node.inputs[i]
            if _private_constant(c) and _broadcasts_to_last(c, inv.size):
                assert c is not None and c.const_value is not None
                old = c.const_value.numpy().astype(np.float32).reshape(-1)
                _replace_input(node, i, (old * inv).astype(np.float32), names)
                return "folded into " + (node.name or "Mul")
        return None
    if node.op_type == "LayerNormalization" and node.attributes.get_int("axis", -1) in (
        -1,
        len(x.shape or ()) - 1,
    ):
        scale = node.inputs[1]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if not _private_constant(scale) or (bias is not None and not _private_constant(bias)):
            return None
        for i, c in ((1, scale), (2, bias)):
            if c is None or c.const_value is None:
                continue
            old = c.const_value.numpy().astype(np.float32).reshape(-1)
            if old.size != inv.size:
                return None
            _replace_input(node, i, (old * inv).astype(np.float32), names)
        return "folded into " + (node.name or "LayerNormalization")
    return None


def _private_constant(v: ir.Value | None) -> bool:
    return (
        v is not None
        and v.const_value is not None
        and v.is_initializer()
        and not v.is_graph_input()
        and len(list(v.uses())) == 1
        and v.dtype == ir.DataType.FLOAT
    )


def _broadcasts_to_last(c: ir.Value | None, k: int) -> bool:
    """A scalar, or a tensor of only 1s but its last axis, which is ``k`` long."""
    if c is None or c.const_value is None:
        return False
    shape = c.const_value.shape.numpy()
    return all(d == 1 for d in shape) or (shape[-1] == k and all(d == 1 for d in shape[:-1]))


def _replace_input(node: ir.Node, index: int, array: np.ndarray, names: NameAllocator) -> None:
    old = node.inputs[index]
    assert old is not None and node.graph is not None
    value = add_initializer(node.graph, names.new(f"{old.name}_scaled"), array)
    node.replace_input_with(index, value)
    if not old.uses() and node.graph.initializers.get(old.name or "") is old:
        del node.graph.initializers[old.name or ""]


def _insert_mul(group: ScaleGroup, inv: np.ndarray, names: NameAllocator) -> None:
    first = group.weights[0].uses[0].node
    graph = first.graph
    assert graph is not None
    factor = add_initializer(graph, names.new(f"{group.name}_channel_scale"), inv)
    mul = ir.node("Mul", [group.x, factor], name=names.new(f"{group.name}_ChannelScale"))
    out = mul.outputs[0]
    out.name = names.new(f"{group.name}_scaled")
    if group.x.type is not None:  # exporters often leave activations untyped
        out.type, out.shape = group.x.type, group.x.shape
    readers = [w.uses[0].node for w in group.weights]
    position = min(readers, key=lambda n: list(graph).index(n))
    graph.insert_before(position, mul)
    for node in readers:
        node.replace_input_with(0, out)
