"""Structured pruning: remove whole channels so the dense graph gets smaller and faster.

Zeros inside a dense weight cost onnxruntime as much as any number; removed channels do
not. For every dependency group (``structured/groups.py``) the channels whose removal
changes the consumers' outputs least on the calibration data go, then each consumer's
weights are rebuilt by least squares so its output on that data matches the teacher's:

    W' = argmin || X_S W'^T + b' - X W^T ||^2   (X: the consumer's input, S: kept features)

solved from the streamed Gram matrix of X (``recover/hessian.py``), with a ones column so
the bias absorbs the mean of what was removed. Importance of a channel: the energy of its
contribution to the consumers' outputs, E[x_j^2] ||W[:, j]||^2 summed over its features,
each consumer normalised by its total output energy (a residual group sums over layers).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.data import DataSource, input_specs, open_data
from onnxcomp.naming import NameAllocator
from onnxcomp.passes.shape_inference import InferShapesPass
from onnxcomp.recover.hessian import HessianAccumulator
from onnxcomp.recover.layers import RebuildLayer, assign_rounds, describe_layer
from onnxcomp.runtime import capture
from onnxcomp.structured.groups import Group, find_groups
from onnxcomp.structured.removed import record_removed
from onnxcomp.weights import Use, Weight

if TYPE_CHECKING:
    from onnxcomp.options import CompressOptions
    from onnxcomp.passes.report import CompressReport

logger = logging.getLogger(__name__)

DAMP = 0.01  # ridge on the kept features' Gram matrix, relative to its mean diagonal
ALIGN = 8  # kept channel counts of groups this large or larger are a multiple of 8
ALIGN_FROM = 64
# The global ratio leaves narrower groups whole: they hold little of the compute, and on
# conv nets they are where accuracy goes (paddle-ocr-cls at 0.5: 61.5% accuracy with every
# group cut, 93.5% with groups of >= 64 channels only, 95.5% unpruned). A per-layer
# ratio (recipes) applies at any width.
MIN_CHANNELS = 64


def kept_count(size: int, ratio: float) -> int:
    """Channels kept of ``size`` at ``ratio`` removed: at least one, aligned for SIMD."""
    keep = max(1, size - math.floor(ratio * size))
    if size >= ALIGN_FROM:
        keep = min(size, -(-keep // ALIGN) * ALIGN)
    return keep


class PruneChannelsPass(ir.passes.InPlacePass):
    """Remove ``ratio`` of the channels of every safe group (per-group ratios override)."""

    def __init__(
        self,
        ratio: float,
        calib: Callable[[ir.Model], DataSource],
        *,
        ratio_for: Callable[[Group], float | None] = lambda g: None,
        report: CompressReport | None = None,
        repair: bool = True,
        min_channels: int = MIN_CHANNELS,
    ) -> None:
        super().__init__()
        self.repair = repair  # False: drop channels, keep the original weights (ablation)
        self.min_channels = min_channels
        self.ratio, self.calib, self.ratio_for, self.report = ratio, calib, ratio_for, report
        self.removed: dict[str, tuple[int, int]] = {}  # producer -> (before, after)
        self.blocked: dict[str, str] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        clear_shapes(model)
        InferShapesPass()(model)
        before = cost(model)
        plan: list[tuple[Group, int]] = []
        for g in find_groups(model):
            ratio = self.ratio_for(g)
            if ratio is None:
                ratio = self.ratio if g.size >= self.min_channels else 0.0
            if g.blocked:
                self.blocked[g.name] = g.blocked
                logger.info("group %s left whole: %s", g.name, g.blocked)
                continue
            keep = kept_count(g.size, ratio)
            if keep < g.size:
                plan.append((g, keep))
        if not plan:
            self._notes(before, before)
            return ir.passes.PassResult(model, modified=False)
        consumers = {id(n): _layer(n) for g, _ in plan for n in g.consumers}
        data = self.calib(model)
        grams = collect_grams(model, list(consumers.values()), data)
        names = NameAllocator(model)
        keeps: list[tuple[Group, np.ndarray]] = []
        for g, keep in plan:
            score = np.zeros(g.size)
            for node in g.consumers:
                layer = consumers[id(node)]
                score += channel_energy(layer, grams[id(node)], g.size)
            # Highest energy kept; ties broken by channel order (deterministic).
            order = np.lexsort((np.arange(g.size), -score))
            kept = np.sort(order[:keep])
            keeps.append((g, kept))
            self.removed[g.name] = (g.size, keep)
        if self.repair:
            repair_in_rounds(model, consumers, keeps, data, names)
        apply_slices(model, keeps, names)
        record_removed(model, self.removed)
        clear_shapes(model)
        InferShapesPass()(model)
        self._notes(before, cost(model))
        return ir.passes.PassResult(model, modified=True)

    def _notes(self, before: tuple[int, int], after: tuple[int, int]) -> None:
        if self.report is None:
            return
        self.report.notes.append(
            f"channel pruning: {len(self.removed)} group(s) pruned, {len(self.blocked)} left "
            f"whole; parameters {before[0]:,} -> {after[0]:,}, MACs per sample "
            f"{before[1]:,} -> {after[1]:,}"
        )
        for name, (was, now) in self.removed.items():
            self.report.notes.append(f"channels of {name}: {was} -> {now}")
        for name, why in self.blocked.items():
            self.report.notes.append(f"channels of {name} kept: {why}")


def _layer(node: ir.Node) -> RebuildLayer:
    value = node.inputs[1]
    assert value is not None
    if value.const_value is None:  # a Constant node's output
        value.const_value = ir.convenience.get_const_tensor(value)
    weight = Weight(value, node.graph, [Use(node, 1, None)])  # type: ignore[arg-type]
    layer = describe_layer(node, weight)
    assert layer is not None
    return layer


def collect_grams(
    model: ir.Model, layers: list[RebuildLayer], data: DataSource
) -> dict[int, np.ndarray]:
    """Mean [X 1]^T [X 1] per consumer (K+1 square), in one streamed run of the teacher."""
    accs: dict[tuple, HessianAccumulator] = {}
    for layer in layers:
        accs.setdefault(layer.hessian_key, HessianAccumulator(layer.features() + 1))
    readers = {layer.hessian_key: layer for layer in layers}
    for _, values in capture.stream(model, [la.input_name for la in layers], data):
        for key, layer in readers.items():
            x = np.asarray(values[layer.input_name], np.float32)
            for chunk in layer.rows(x):
                rows = chunk[0]
                accs[key].update(np.hstack([rows, np.ones((rows.shape[0], 1), rows.dtype)]))
        del values
    return {id(la.node): accs[la.hessian_key].matrix for la in layers}


def _features_per_channel(layer: RebuildLayer, size: int) -> int:
    return layer.features() // size


def channel_energy(layer: RebuildLayer, gram: np.ndarray, size: int) -> np.ndarray:
    """Share of the consumer's output energy carried by each input channel."""
    w = layer.matrices(layer.weight.array.astype(np.float64))[0]  # [O, K]
    per = _features_per_channel(layer, size)
    energy = np.diag(gram)[:-1] * np.sum(w * w, axis=0)
    total = float(np.einsum("ij,jk,ik->", w, gram[:-1, :-1], w))
    return energy.reshape(size, per).sum(axis=1) / max(total, 1e-30)


def repair_in_rounds(
    model: ir.Model,
    consumers: dict[int, RebuildLayer],
    keeps: list[tuple[Group, np.ndarray]],
    data: DataSource,
    names: NameAllocator,
) -> None:
    """Consumers in topological rounds (``recover/layers.assign_rounds``): each round fits
    the student as rebuilt so far, whose inputs carry the earlier rounds' error, to the
    teacher's outputs. Removed inputs get zero weights, so the full-size student computes
    what the pruned graph will; the cut happens once at the end."""
    teacher = ir.to_proto(model)
    kept_of = {id(n): (kept, g.size) for g, kept in keeps for n in g.consumers}
    layers = assign_rounds(model.graph, {k: consumers[k] for k in kept_of})
    by_round: dict[int, list[RebuildLayer]] = defaultdict(list)
    for layer in layers:
        by_round[layer.round].append(layer)
    for r in sorted(by_round):
        stats = cross_grams(teacher, model, by_round[r], data)
        for layer in by_round[r]:
            kept, size = kept_of[id(layer.node)]
            repair(layer, *stats[id(layer.node)], kept, size, names)


def cross_grams(
    teacher: onnx.ModelProto, student: ir.Model, layers: list[RebuildLayer], data: DataSource
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per consumer, the means of [Xs 1]^T [Xs 1] and [Xs 1]^T Xt on the same batches
    (Xs: the student's input rows, Xt: the teacher's)."""
    acc: dict[int, list] = {}
    for layer in layers:
        k = layer.features()
        acc[id(layer.node)] = [np.zeros((k + 1, k + 1)), np.zeros((k + 1, k)), 0]
    names = [layer.input_name for layer in layers]
    runs = zip(
        capture.stream(teacher, names, data), capture.stream(student, names, data), strict=True
    )
    for (_, t), (_, s) in runs:
        for layer in layers:
            a = acc[id(layer.node)]
            xt_chunks = layer.rows(np.asarray(t[layer.input_name], np.float32))
            xs_chunks = layer.rows(np.asarray(s[layer.input_name], np.float32))
            for xt, xs in zip(xt_chunks, xs_chunks, strict=True):
                xs1 = np.hstack([xs[0], np.ones((xs[0].shape[0], 1), np.float32)])
                xs1 = xs1.astype(np.float64)
                a[0] += xs1.T @ xs1
                a[1] += xs1.T @ xt[0].astype(np.float64)
                a[2] += xs1.shape[0]
        del t, s
    return {k: (a[0] / max(a[2], 1), a[1] / max(a[2], 1)) for k, a in acc.items()}


def repair(
    layer: RebuildLayer,
    gram: np.ndarray,
    cross: np.ndarray,
    kept: np.ndarray,
    size: int,
    names: NameAllocator,
) -> None:
    """Least-squares consumer weights over the kept channels; the bias takes the mean.

    ``gram``: mean [Xs 1]^T [Xs 1] of the student's input; ``cross``: mean [Xs 1]^T Xt."""
    array = layer.weight.array.astype(np.float64)
    w = layer.matrices(array)[0]  # [O, K]
    per = _features_per_channel(layer, size)
    feats = (kept[:, None] * per + np.arange(per)[None, :]).ravel()
    bias = _bias_slot(layer)
    cols = np.append(feats, gram.shape[0] - 1) if bias is not None else feats
    h = gram[np.ix_(cols, cols)].copy()
    n = len(feats)
    # Ridge toward the original kept weights, not toward zero: when the removed inputs were
    # exactly zero the original weights are the exact solution and come back unchanged.
    lam = DAMP * float(np.mean(np.diag(h)[:n])) + 1e-12
    h[np.arange(n), np.arange(n)] += lam
    target = cross[cols] @ w.T  # [cols, O]
    target[:n] += lam * w[:, feats].T
    z = np.linalg.solve(h, target)
    new_w = np.zeros_like(w)
    new_w[:, feats] = z[:n].T
    full = layer.from_matrices([new_w.astype(np.float32)], array.shape)
    set_constant(layer.weight.value, full.astype(np.float32))
    if bias is not None:
        _add_bias(layer, bias, z[n].astype(np.float32), names)


def _bias_slot(layer: RebuildLayer) -> tuple[ir.Node, int] | None:
    """Where the consumer's bias lives: its own input 2, or the Add right after a MatMul."""
    node = layer.node
    if layer.kind in ("conv", "gemm"):
        return node, 2
    out = node.outputs[0]
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None
    add, idx = uses[0].node, uses[0].idx
    other = add.inputs[1 - idx] if add.op_type == "Add" and len(add.inputs) == 2 else None
    if other is None or ir.convenience.get_const_tensor(other) is None:
        return None
    if len(other.uses()) != 1 or _array(other).shape != (layer.weight.array.shape[1],):
        return None
    return add, 1 - idx


def _add_bias(
    layer: RebuildLayer, slot: tuple[ir.Node, int], delta: np.ndarray, names: NameAllocator
) -> None:
    node, index = slot
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is not None and ir.convenience.get_const_tensor(value) is not None:
        old = _array(value).astype(np.float32)
        set_constant(value, (old + delta).astype(np.float32))
        return
    name = names.new(f"{layer.name}.bias")
    new = ir.Value(name=name, shape=ir.Shape(delta.shape), type=ir.TensorType(ir.DataType.FLOAT))
    new.const_value = ir.tensor(delta, name=name)
    node.graph.register_initializer(new)  # type: ignore[union-attr]
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, new)


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
            cuts[value][slot.axis] = kept
            readers[value].add((id(slot.node), slot.index))
        for node in g.depthwise:
            node.attributes["group"] = ir.AttrInt64("group", len(kept))
        for node in g.producers:  # a bias the repair of this layer as a consumer added
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            if bias is not None and (id(node), 2) not in readers[bias]:
                cuts[bias][0] = kept
                readers[bias].add((id(node), 2))
    graph = model.graph
    for value, axes in cuts.items():
        arr = _array(value)
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


def _array(value: ir.Value) -> np.ndarray:
    tensor = ir.convenience.get_const_tensor(value)
    assert tensor is not None, value.name
    return tensor.numpy()


def set_constant(value: ir.Value, array: np.ndarray) -> None:
    """New contents for an initializer or a Constant node's output (what is saved)."""
    tensor = ir.tensor(np.ascontiguousarray(array), name=value.name)
    node = value.producer()
    if node is not None:
        assert node.op_type == "Constant", node.op_type
        for key in [k for k in node.attributes if k.startswith("value")]:
            del node.attributes[key]
        node.attributes["value"] = ir.AttrTensor("value", tensor)
    value.const_value = tensor
    value.shape = ir.Shape(array.shape)


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


def channel_pass(options: CompressOptions, report: CompressReport) -> PruneChannelsPass:
    """The pass for ``--prune-channels`` and per-layer ``prune_channels`` (recipes)."""
    layers = options.layers

    def ratio_for(group: Group) -> float | None:
        for node in group.producers:
            weight = node.inputs[1]
            for key in (weight.name if weight is not None else None, node.name, node.op_type):
                layer = layers.get(key or "")
                if layer is not None and layer.prune_channels is not None:
                    return layer.prune_channels
        return None

    def data(model: ir.Model) -> DataSource:
        return open_data(options.calib, input_specs(model))

    return PruneChannelsPass(
        options.prune_channels or 0.0, data, ratio_for=ratio_for, report=report
    )
