"""Per-layer settings: which sparsity and precision each weight and its node get.

A layer key names a weight, a node, or an op type; the most specific match wins
(weight name, then node name, then op type), so a recipe can say "all Conv at 50%,
except conv1 which stays float".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph.weights import Weight
from onnxcomp.options import LayerOptions


def excluder(patterns: Iterable[str]) -> Callable[[Weight], bool]:
    """A weight is excluded when a pattern names it, a consumer node, or a consumer op type."""
    wanted = set(patterns)

    def include(weight: Weight) -> bool:
        if weight.name in wanted:
            return False
        for use in weight.uses:
            if use.node.name in wanted or use.node.op_type in wanted:
                return False
        return True

    return include


def resolve(weight: Weight, layers: dict[str, LayerOptions]) -> LayerOptions | None:
    if not layers:
        return None
    if weight.name in layers:
        return layers[weight.name]
    for use in weight.uses:
        if use.node.name in layers:
            return layers[use.node.name]
    for use in weight.uses:
        if use.node.op_type in layers:
            return layers[use.node.op_type]
    return None


def node_precision(node: ir.Node, layers: dict[str, LayerOptions]) -> str | None:
    """The precision a node's layer asks for (node name first, then op type)."""
    for key in (node.name, node.op_type):
        if key in layers and layers[key].precision is not None:
            return layers[key].precision
    return None


def nodes_kept_out_of_int8(model: ir.Model, layers: dict[str, LayerOptions]) -> set[str]:
    """Names of nodes whose layer asks for float activations (float, int8 or int4 weights
    only)."""
    if not layers:
        return set()
    names: set[str] = set()
    graphs = [model.graph, *model.graph.subgraphs()]
    floats = ("float", "weights", "int4")
    weight_layers = {k: v for k, v in layers.items() if v.precision in floats}
    for graph in graphs:
        for node in graph:
            precision = node_precision(node, layers)
            if precision is None:
                for value in node.inputs:
                    if value is not None and value.name in weight_layers:
                        precision = weight_layers[value.name].precision
            if precision in floats and node.name:
                names.add(node.name)
    return names


def quantize_filter(
    include: Callable[[Weight], bool], layers: dict[str, LayerOptions], global_quantize: str | None
) -> Callable[[Weight], bool]:
    """Which weights get int8: the global setting, overridden per layer."""

    def wanted(weight: Weight) -> bool:
        if not include(weight):
            return False
        layer = resolve(weight, layers)
        if layer is None or layer.precision is None:
            return global_quantize is not None
        return layer.precision != "float"

    return wanted


def int4_filter(
    include: Callable[[Weight], bool], layers: dict[str, LayerOptions], global_quantize: str | None
) -> Callable[[Weight], bool]:
    """Which weights int4 blocks may take: with global int4, those no layer sets otherwise;
    else the layers asking for int4 (mixed with int8)."""

    def wanted(weight: Weight) -> bool:
        if not include(weight):
            return False
        layer = resolve(weight, layers)
        if layer is None or layer.precision is None:
            return global_quantize == "int4"
        return layer.precision == "int4"

    return wanted


def sparsity_overrides(weights: list[Weight], layers: dict[str, LayerOptions]) -> dict[str, float]:
    """Per-weight sparsity where a layer sets one (0 means: do not prune this one)."""
    out = {}
    for weight in weights:
        layer = resolve(weight, layers)
        if layer is not None and layer.prune_sparsity is not None:
            out[weight.name] = float(layer.prune_sparsity)
    return out


def layer_bits(weight: Weight, layers: dict[str, LayerOptions]) -> int | None:
    """The codebook bits ``weight``'s layer sets (None: the global --bits)."""
    layer = resolve(weight, layers)
    return None if layer is None or layer.bits is None else int(layer.bits)


def any_quantized(layers: dict[str, LayerOptions]) -> bool:
    return any(layer.precision in ("weights", "int8") for layer in layers.values())


def model_names(model: ir.Model) -> set[str]:
    """Every name a layer key may match: node names, op types, value and weight names."""
    names: set[str] = set()
    for graph in (model.graph, *model.graph.subgraphs()):
        names.update(graph.initializers)
        for node in graph:
            names.add(node.op_type)
            if node.name:
                names.add(node.name)
            names.update(v.name for v in node.outputs if v.name)
    return names


def check_layer_names(layers: dict[str, LayerOptions], known: set[str]) -> None:
    """A layer key the model lacks is a typo or the wrong model: say so, never ignore it."""
    missing = sorted(set(layers) - known)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise OnnxcompError(
            f"layer '{missing[0]}'{more} names no node, weight or op type of this model"
        )
