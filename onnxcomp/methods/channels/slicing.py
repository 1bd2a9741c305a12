"""Cutting kept channels out of a graph: sliced constants, rewritten group counts, and
what the graph costs before and after (parameters, MACs)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import const_array, set_constant
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.methods.channels.channels import local
from onnxcomp.methods.channels.groups import Group
from onnxcomp.methods.channels.regroup import rewrite_slice, rewrite_split


def apply_slices(
    model: ir.Model, keeps: list[tuple[Group, np.ndarray]], names: NameAllocator
) -> None:
    """Cut every sliced constant once (all its axes), then fix depthwise group counts."""
    cuts: dict[ir.Value, dict[int, np.ndarray]] = defaultdict(dict)
    readers: dict[ir.Value, set[tuple[int, int]]] = defaultdict(set)
    for g, kept in keeps:
        for slot in g.slots:
            value = slot.node.inputs[slot.index]
            if value is None:
                continue
            cuts[value][slot.axis] = kept_features(local(slot.segments, kept), slot.per)
            readers[value].add((id(slot.node), slot.index))
        for node, segs in g.depthwise:
            node.attributes["group"] = ir.AttrInt64("group", len(local(segs, kept)))
        for node, per, segs in g.reshapes:  # a literal feature count: kept x run length
            shape = const_array(node.inputs[1]).copy()  # type: ignore[arg-type]
            shape[1] = len(local(segs, kept)) * per
            set_constant(node.inputs[1], shape)  # type: ignore[arg-type]
        for node, parts in g.splits:
            make = lambda array, n=node: _new_constant(model, names, n, array)  # noqa: E731
            rewrite_split(node, [len(local(p, kept)) for p in parts], make)
        for node, k, segs, start, end in g.slices:
            rewrite_slice(node, k, local(segs, kept), start, end)
        for node in g.producers:  # a bias the repair of this layer as a consumer added
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            if bias is not None and (id(node), 2) not in readers[bias]:
                cuts[bias][0] = local(g.made_by(node), kept)
                readers[bias].add((id(node), 2))
    graph = model.graph
    for value, axes in cuts.items():
        arr = const_array(value)
        for axis, kept in axes.items():
            arr = np.take(arr, kept, axis=axis)
        uses = value.uses()
        if len(uses) == len(readers[value]) and not value.is_graph_output():
            set_constant(value, arr)
            continue
        # Also read elsewhere: the group's readers get their own cut copy.
        name = names.new(f"{value.name}.pruned")
        new = ir.Value(name=name, shape=ir.Shape(arr.shape), type=value.type)
        new.const_value = ir.tensor(np.ascontiguousarray(arr), name=name)
        graph.register_initializer(new)
        for use in uses:
            if (id(use.node), use.idx) in readers[value]:
                use.node.replace_input_with(use.idx, new)


def _new_constant(model: ir.Model, names: NameAllocator, node: ir.Node, array) -> ir.Value:
    name = names.new(f"{node.name or 'split'}_sizes")
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.INT64))
    value.const_value = ir.tensor(array, name=name)
    model.graph.register_initializer(value)
    return value


def kept_features(kept: np.ndarray, per: int) -> np.ndarray:
    """Indices of the features that kept channels span, ``per`` consecutive each."""
    if per == 1:
        return kept
    return (np.asarray(kept)[:, None] * per + np.arange(per)[None, :]).ravel()


def clear_shapes(model: ir.Model) -> None:
    """Forget inferred shapes of intermediate tensors (stale after channels change)."""
    graph = model.graph
    keep = {*graph.inputs, *graph.outputs, *graph.initializers.values()}
    for node in graph:
        for out in node.outputs:
            if out not in keep:
                out.shape = None


def cost(model: ir.Model) -> tuple[int, int]:
    """(float parameters, multiply-accumulates per sample of Conv/Gemm/MatMul weights).

    Symbolic dimensions (batch, sequence length) count as 1: MACs per sample or token."""
    consts = [*model.graph.initializers.values()]
    consts += [n.outputs[0] for n in model.graph if n.op_type == "Constant"]
    params = 0
    for value in consts:
        tensor = ir.convenience.get_const_tensor(value)
        if tensor is not None and tensor.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
            params += tensor.size
    macs = 0
    for node in model.graph:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        tensor = ir.convenience.get_const_tensor(w) if w is not None else None
        if tensor is None:
            continue
        shape = node.outputs[0].shape
        dims = [d if isinstance(d, int) else 1 for d in (shape or [])]
        positions = int(np.prod(dims[2:] if node.op_type == "Conv" else dims[1:-1]))
        macs += int(tensor.size) * positions
    return int(params), macs
