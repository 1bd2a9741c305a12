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
import onnx_ir as ir

from onnxcomp.data import DataSource, input_specs, open_data
from onnxcomp.naming import NameAllocator
from onnxcomp.passes.shape_inference import InferShapesPass
from onnxcomp.recover.hessian import HessianAccumulator
from onnxcomp.recover.layers import RebuildLayer, _describe
from onnxcomp.runtime import capture
from onnxcomp.structured.groups import Group, find_groups
from onnxcomp.weights import Use, Weight

if TYPE_CHECKING:
    from onnxcomp.options import CompressOptions
    from onnxcomp.passes.report import CompressReport

logger = logging.getLogger(__name__)

DAMP = 0.01  # ridge on the kept features' Gram matrix, relative to its mean diagonal
ALIGN = 8  # kept channel counts of groups this large or larger are a multiple of 8
ALIGN_FROM = 64


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
    ) -> None:
        super().__init__()
        self.repair = repair  # False: drop channels, keep the original weights (ablation)
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
            ratio = self.ratio if ratio is None else ratio
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
        grams = collect_grams(model, list(consumers.values()), self.calib(model))
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
        for g, kept in keeps if self.repair else ():
            for node in g.consumers:
                repair(consumers[id(node)], grams[id(node)], kept, g.size, names)
        apply_slices(model, keeps, names)
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
    weight = Weight(value, node.graph, [Use(node, 1, None)])  # type: ignore[arg-type]
    layer = _describe(node, weight)
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


def repair(
    layer: RebuildLayer, gram: np.ndarray, kept: np.ndarray, size: int, names: NameAllocator
) -> None:
    """Least-squares consumer weights over the kept channels; the bias takes the mean."""
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
    target = gram[np.ix_(cols, np.arange(gram.shape[0] - 1))] @ w.T  # [cols, O]
    target[:n] += lam * w[:, feats].T
    z = np.linalg.solve(h, target)
    new_w = np.zeros_like(w)
    new_w[:, feats] = z[:n].T
    full = layer.from_matrices([new_w.astype(np.float32)], array.shape)
    layer.weight.value.const_value = ir.tensor(full.astype(np.float32), name=layer.weight.name)
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
    if other is None or other.const_value is None or len(other.uses()) != 1:
        return None
    if other.const_value.numpy().shape != (layer.weight.array.shape[1],):
        return None
    return add, 1 - idx


def _add_bias(
    layer: RebuildLayer, slot: tuple[ir.Node, int], delta: np.ndarray, names: NameAllocator
) -> None:
    node, index = slot
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is not None and value.const_value is not None:
        old = value.const_value.numpy().astype(np.float32)
        value.const_value = ir.tensor((old + delta).astype(np.float32), name=value.name)
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
    graph = model.graph
    for value, axes in cuts.items():
        arr = value.const_value.numpy()  # type: ignore[union-attr]
        for axis, kept in axes.items():
            arr = np.take(arr, kept, axis=axis)
        tensor = ir.tensor(np.ascontiguousarray(arr), name=value.name)
        uses = value.uses()
        if len(uses) == len(readers[value]) and not value.is_graph_output():
            value.const_value = tensor
            value.shape = ir.Shape(arr.shape)
            continue
        # Also read elsewhere: the group's readers get their own cut copy.
        name = names.new(f"{value.name}.pruned")
        new = ir.Value(name=name, shape=ir.Shape(arr.shape), type=value.type)
        new.const_value = ir.tensor(np.ascontiguousarray(arr), name=name)
        graph.register_initializer(new)
        for use in uses:
            if (id(use.node), use.idx) in readers[value]:
                use.node.replace_input_with(use.idx, new)


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
    params = sum(
        v.const_value.size
        for v in model.graph.initializers.values()
        if v.const_value is not None and v.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16)
    )
    macs = 0
    for node in model.graph:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        if w is None or w.const_value is None:
            continue
        shape = node.outputs[0].shape
        dims = [d if isinstance(d, int) else 1 for d in (shape or [])]
        positions = int(np.prod(dims[2:] if node.op_type == "Conv" else dims[1:-1]))
        macs += int(w.const_value.size) * positions
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
