"""The layers recovery can rebuild, seen as matrix products W X.

Conv (any groups, strides, pads, dilations, 1-3 spatial dims), Gemm and MatMul whose
weight is a float32 initializer in the weight slot (input 1) with no other reader. Each
layer knows how to turn its input activation into rows of X, and its weight into
[output channels, K] matrices (one per Conv group) and back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.numerics.hessian import conv_pads, im2col


@dataclass
class RebuildLayer:
    node: ir.Node
    weight: Weight
    kind: str  # "conv", "gemm" or "matmul"
    round: int = 0  # layers of one round depend on no unprocessed layer: one ORT run
    groups: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"
    trans_a: bool = False
    trans_b: bool = False

    @property
    def name(self) -> str:
        return self.node.name or self.weight.name

    @property
    def input_name(self) -> str:
        value = self.node.inputs[0]
        return (value.name if value is not None else None) or ""

    @property
    def channel_axis(self) -> int:
        """Output-channel axis of the stored weight (what DequantizeLinear's axis is)."""
        if self.kind == "gemm":
            return 0 if self.trans_b else 1
        return 1 if self.kind == "matmul" else 0

    @property
    def hessian_key(self) -> tuple:
        """Layers reading the same tensor the same way share one X^T X."""
        geometry = (self.kernel, self.strides, self.dilations, self.pads, self.auto_pad)
        return (self.input_name, self.kind, self.groups, geometry, self.trans_a)

    def matrices(self, array: np.ndarray) -> list[np.ndarray]:
        """The weight as [rows = output channels, K] matrices, one per group."""
        if self.kind == "conv":
            per = array.shape[0] // self.groups
            return [array[g * per : (g + 1) * per].reshape(per, -1) for g in range(self.groups)]
        return [array if (self.kind == "gemm" and self.trans_b) else array.T]

    def from_matrices(self, mats: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        if self.kind == "conv":
            return np.concatenate(mats, axis=0).reshape(shape)
        m = mats[0]
        return np.ascontiguousarray(m if (self.kind == "gemm" and self.trans_b) else m.T)

    def features(self) -> int:
        shape = self.weight.array.shape
        if self.kind == "conv":
            return int(np.prod(shape[1:]))
        return shape[1] if (self.kind == "gemm" and self.trans_b) else shape[0]

    def rows(self, x: np.ndarray) -> Iterator[list[np.ndarray]]:
        """Chunks of X rows (one array per group) from a batch of the layer's input."""
        if self.kind == "conv":
            pads = conv_pads(
                self.auto_pad, x.shape[2:], self.kernel, self.strides, self.dilations, self.pads
            )
            yield from im2col(x, self.kernel, self.strides, pads, self.dilations, self.groups)
        elif self.kind == "gemm":
            yield [x.T if self.trans_a else x]
        else:
            yield [x.reshape(-1, x.shape[-1])]


def _ints(node: ir.Node, name: str, default: list[int]) -> tuple[int, ...]:
    return tuple(node.attributes.get_ints(name, default))


def describe_layer(node: ir.Node, weight: Weight) -> RebuildLayer | None:
    array_shape = weight.value.shape
    rank = len(array_shape) if array_shape is not None else 0
    if node.op_type == "Conv" and 3 <= rank <= 5:
        assert array_shape is not None
        dims = tuple(int(d) for d in array_shape)  # type: ignore[arg-type]
        n_sp = rank - 2
        return RebuildLayer(
            node,
            weight,
            "conv",
            groups=node.attributes.get_int("group", 1),
            kernel=dims[2:],
            strides=_ints(node, "strides", [1] * n_sp),
            dilations=_ints(node, "dilations", [1] * n_sp),
            pads=_ints(node, "pads", [0] * (2 * n_sp)),
            auto_pad=node.attributes.get_string("auto_pad", "NOTSET"),
        )
    if node.op_type == "Gemm" and rank == 2:
        return RebuildLayer(
            node,
            weight,
            "gemm",
            trans_a=bool(node.attributes.get_int("transA", 0)),
            trans_b=bool(node.attributes.get_int("transB", 0)),
        )
    if node.op_type == "MatMul" and rank == 2:
        return RebuildLayer(node, weight, "matmul")
    return None


def find_layers(model: ir.Model, include: Callable[[Weight], bool]) -> list[RebuildLayer]:
    """Rebuildable layers of the main graph in topological order, with their rounds."""
    candidates: dict[int, RebuildLayer] = {}
    for weight in find_weights(model):
        if len(weight.uses) != 1 or weight.graph is not model.graph:
            continue
        use = weight.uses[0]
        if use.index != 1 or use.node.domain not in ("", "ai.onnx"):
            continue
        if weight.value.dtype != ir.DataType.FLOAT or weight.value.is_graph_output():
            continue
        if use.node.inputs[0] is None or not include(weight):
            continue
        layer = describe_layer(use.node, weight)
        if layer is not None:
            candidates[id(use.node)] = layer
    return assign_rounds(model.graph, candidates)


def assign_rounds(graph: ir.Graph, candidates: dict[int, Any]) -> list[Any]:
    """Round = how many rebuilt layers lie on the longest path to the layer's input.

    ``candidates`` maps id(node) to an object with a ``round`` attribute, set here.
    """
    depth: dict[int, int] = {}
    deepest = 0
    layers = []
    for node in graph:
        inputs = [depth.get(id(v), 0) for v in node.inputs if v is not None]
        level = max(inputs, default=0)
        if any(
            attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for attr in node.attributes.values()
        ):
            level = deepest  # subgraphs read outer values invisibly: assume the worst
        layer = candidates.get(id(node))
        if layer is not None:
            layer.round = level
            layers.append(layer)
            level += 1
        deepest = max(deepest, level)
        for out in node.outputs:
            depth[id(out)] = level
    return layers
