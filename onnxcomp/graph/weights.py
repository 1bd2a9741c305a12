"""Which constant tensors are weights, and along which axis their output channels lie.

A weight is a float initializer feeding the weight slot of Conv, ConvTranspose, Gemm,
MatMul (the constant operand) or the table of a Gather (an embedding). The same tensor
may feed several consumers; it is listed once with all of them, so passes transform it
once. Tensors that are also graph inputs can be overridden at run time: never weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxcomp.graph.edit import all_graphs

FLOAT_TYPES = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather")


@dataclass
class Use:
    node: ir.Node
    index: int
    axis: int | None  # output-channel axis for this consumer; None: no natural channel


@dataclass
class Weight:
    value: ir.Value
    graph: ir.Graph
    uses: list[Use] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.value.name or ""

    @property
    def array(self):
        assert self.value.const_value is not None
        return self.value.const_value.numpy()

    @property
    def channel_axis(self) -> int | None:
        """The consumers' common channel axis (normalised), or None when they disagree."""
        rank = len(self.value.shape) if self.value.shape is not None else 0
        axes = {(u.axis % rank) if (u.axis is not None and rank) else None for u in self.uses}
        return axes.pop() if len(axes) == 1 else None

    @property
    def op_types(self) -> list[str]:
        return sorted({u.node.op_type for u in self.uses})


def _is_constant(value: ir.Value | None) -> bool:
    return (
        value is not None
        and value.is_initializer()
        and value.const_value is not None
        and not value.is_graph_input()
    )


def _weight_slot(node: ir.Node) -> Iterator[tuple[int, int | None]]:
    """(input index, output-channel axis) of the weight operands of a node."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return
    if op == "Conv" or op == "ConvTranspose":
        yield 1, (0 if op == "Conv" else 1)
    elif op == "Gemm":
        trans_b = node.attributes.get_int("transB", 0)
        trans_a = node.attributes.get_int("transA", 0)
        yield 1, (0 if trans_b else 1)
        yield 0, (1 if trans_a else 0)
    elif op == "MatMul":
        yield 1, -1
        yield 0, None
    elif op == "Gather" and node.attributes.get_int("axis", 0) == 0:
        yield 0, 0


def find_weights(model: ir.Model, min_size: int = 16) -> list[Weight]:
    """Every weight of the model in a stable order (graph order of first use)."""
    found: dict[int, Weight] = {}
    for graph in all_graphs(model.graph):
        for node in graph:
            for index, axis in _weight_slot(node):
                if index >= len(node.inputs):
                    continue
                value = node.inputs[index]
                if value is None or value.const_value is None or not _is_constant(value):
                    continue
                if value.dtype not in FLOAT_TYPES:
                    continue
                if value.const_value.size < min_size:
                    continue
                if node.op_type == "MatMul" and index == 0 and _is_constant(node.inputs[1]):
                    continue  # constant x constant: folding's job, not ours
                if node.op_type == "Gather" and _is_constant(node.inputs[1]):
                    continue
                key = id(value)
                if key not in found:
                    found[key] = Weight(value, value.graph or graph)
                found[key].uses.append(Use(node, index, axis))
    weights = list(found.values())
    return [w for w in weights if _only_weight_uses(w)]


def _only_weight_uses(weight: Weight) -> bool:
    """A tensor also read as data by some other op (a Shape, an Add) is left alone."""
    slots = {(id(u.node), u.index) for u in weight.uses}
    return all((id(node), index) in slots for node, index in weight.value.uses())
