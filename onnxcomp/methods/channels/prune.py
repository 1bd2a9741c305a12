"""Structured pruning: remove whole channels so the dense graph gets smaller and faster.

Zeros inside a dense weight cost onnxruntime as much as any number; removed channels do
not. For every dependency group (``methods/channels/groups.py``) the channels whose removal
changes the consumers' outputs least on the calibration data go, then each consumer's
weights are rebuilt by least squares so its output on that data matches the teacher's:

    W' = argmin || X_S W'^T + b' - X W^T ||^2   (X: the consumer's input, S: kept features)

solved from the streamed Gram matrix of X (``numerics/hessian.py``), with a ones column so
the bias absorbs the mean of what was removed. Importance of a channel: the energy of its
contribution to the consumers' outputs, E[x_j^2] ||W[:, j]||^2 summed over its features,
each consumer normalised by its total output energy (a residual group sums over layers).

Under ``--task embed`` the rows of padding tokens are left out of both (a consumer whose
rows are the tokens the embed Judge's mask covers, metrics/embed.py ``token_weights``):
the mask keeps them from every real token and the task reads no padding position, yet a
text padded to a static 64 tokens is mostly padding, and the fit spent itself on it.
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

from onnxcomp.graph.edit import const_array, set_constant
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Use, Weight
from onnxcomp.io.data import DataSource
from onnxcomp.methods.channels.channels import Segments, local, spread, width
from onnxcomp.methods.channels.groups import Group, find_groups
from onnxcomp.methods.channels.heads import plan_heads, rewrite_shapes
from onnxcomp.methods.channels.removed import record_removed
from onnxcomp.methods.channels.slicing import (
    apply_slices,
    clear_shapes,
    cost,
    kept_features,
)
from onnxcomp.methods.recover.layers import RebuildLayer, assign_rounds, describe_layer
from onnxcomp.metrics.embed import token_weights
from onnxcomp.numerics.hessian import HessianAccumulator
from onnxcomp.passes.shape_inference import InferShapesPass
from onnxcomp.runtime import capture

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
# The repair holds two (K+1)^2 float64 matrices per consumer: past this many input
# features (VGG's flattened 25,088) they would take gigabytes, so such a group stays whole.
MAX_FEATURES = 8192


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
        tokens: Callable[[dict[str, np.ndarray], int], np.ndarray | None] | None = None,
    ) -> None:
        super().__init__()
        # (feed, rows) -> which of a consumer's rows count (real tokens), or None: all
        self.tokens = tokens
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
            too_wide = [n.name for n in g.consumers if _layer(n).features() > MAX_FEATURES]
            if too_wide:
                g.block(f"{too_wide[0]} reads more than {MAX_FEATURES:,} input features")
            if g.blocked:
                self.blocked[g.name] = g.blocked
                logger.info("group %s left whole: %s", g.name, g.blocked)
                continue
            keep = max(kept_count(g.size, ratio), len(g.must_keep()))
            if keep < g.size:
                plan.append((g, keep))
        taken = {id(n) for g, _ in plan for n in (*g.producers, *g.consumers)}
        heads = plan_heads(model, self.ratio_for, self.ratio, taken)
        if not plan and not heads:
            self._notes(before, before)
            return ir.passes.PassResult(model, modified=False)
        head_groups = [(b.group, b.head_dim * keep) for b, keep in heads]
        consumers = {id(n): _layer(n) for g, _ in [*plan, *head_groups] for n in g.consumers}
        data = self.calib(model)
        grams = collect_grams(model, list(consumers.values()), data, self.tokens)
        names = NameAllocator(model)
        keeps: list[tuple[Group, np.ndarray]] = []
        for g, keep in plan:
            score = np.zeros(g.size)
            for node in g.consumers:
                segs = g.read_by(node)
                n = width(segs) if segs is not None else g.size
                energy = channel_energy(consumers[id(node)], grams[id(node)], n)
                score += spread(segs, energy, g.size)
            keeps.append((g, choose(score, keep, g.must_keep())))
            self.removed[g.name] = (g.size, keep)
        for block, keep in heads:
            out = block.group.consumers[0]
            per_head = channel_energy(consumers[id(out)], grams[id(out)], block.group.size)
            score = per_head.reshape(block.heads, block.head_dim).sum(axis=1)
            order = np.lexsort((np.arange(block.heads), -score))
            keeps.append((block.group, kept_features(np.sort(order[:keep]), block.head_dim)))
            self.removed[f"{out.name} (heads)"] = (block.heads, keep)
        if self.repair:
            repair_in_rounds(model, consumers, keeps, data, names, self.tokens)
        apply_slices(model, keeps, names)
        for block, keep in heads:
            rewrite_shapes(block, keep, names)
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


def choose(score: np.ndarray, keep: int, must: list[Segments]) -> np.ndarray:
    """The ``keep`` highest-scoring channels (ties by channel order), and at least one of
    each set in ``must`` (Group.must_keep), its best."""
    order = np.lexsort((np.arange(score.size), -score))
    rank = np.empty(score.size, np.int64)
    rank[order] = np.arange(score.size)
    chosen: set[int] = set()
    for segs in must:
        members = np.concatenate([np.arange(s, s + n) for s, n in segs])
        if not chosen.intersection(members.tolist()):
            chosen.add(int(members[np.argmin(rank[members])]))
    rest = [int(c) for c in order if int(c) not in chosen][: max(keep - len(chosen), 0)]
    return np.sort(np.array([*chosen, *rest], dtype=np.int64))


def _layer(node: ir.Node) -> RebuildLayer:
    value = node.inputs[1]
    assert value is not None
    if value.const_value is None:  # a Constant node's output
        value.const_value = ir.convenience.get_const_tensor(value)
    weight = Weight(value, node.graph, [Use(node, 1, None)])  # type: ignore[arg-type]
    layer = describe_layer(node, weight)
    assert layer is not None
    return layer


Tokens = Callable[[dict[str, np.ndarray], int], np.ndarray | None] | None


def _counted(rows: np.ndarray, feed: dict[str, np.ndarray], tokens: Tokens) -> np.ndarray:
    """The rows that count: all, or the real tokens' (``PruneChannelsPass.tokens``)."""
    keep = tokens(feed, rows.shape[0]) if tokens is not None else None
    return rows if keep is None else rows[keep]


def collect_grams(
    model: ir.Model, layers: list[RebuildLayer], data: DataSource, tokens: Tokens = None
) -> dict[int, np.ndarray]:
    """Mean [X 1]^T [X 1] per consumer (K+1 square), in one streamed run of the teacher."""
    accs: dict[tuple, HessianAccumulator] = {}
    for layer in layers:
        accs.setdefault(layer.hessian_key, HessianAccumulator(layer.features() + 1))
    readers = {layer.hessian_key: layer for layer in layers}
    for batch, values in capture.stream(model, [la.input_name for la in layers], data):
        for key, layer in readers.items():
            x = np.asarray(values[layer.input_name], np.float32)
            for chunk in layer.rows(x):
                rows = _counted(chunk[0], batch.feed, tokens)
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
    tokens: Tokens = None,
) -> None:
    """Consumers in topological rounds (``recover/layers.assign_rounds``): each round fits
    the student as rebuilt so far, whose inputs carry the earlier rounds' error, to the
    teacher's outputs. Removed inputs get zero weights, so the full-size student computes
    what the pruned graph will; the cut happens once at the end."""
    teacher = ir.to_proto(model)
    kept_of = {
        id(n): (local(g.read_by(n), kept), width(g.read_by(n) or ((0, g.size),)))
        for g, kept in keeps
        for n in g.consumers
    }
    layers = assign_rounds(model.graph, {k: consumers[k] for k in kept_of})
    by_round: dict[int, list[RebuildLayer]] = defaultdict(list)
    for layer in layers:
        by_round[layer.round].append(layer)
    for r in sorted(by_round):
        stats = cross_grams(teacher, model, by_round[r], data, tokens)
        for layer in by_round[r]:
            kept, size = kept_of[id(layer.node)]
            repair(layer, *stats[id(layer.node)], kept, size, names)


def cross_grams(
    teacher: onnx.ModelProto,
    student: ir.Model,
    layers: list[RebuildLayer],
    data: DataSource,
    tokens: Tokens = None,
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
    for (batch, t), (_, s) in runs:
        for layer in layers:
            a = acc[id(layer.node)]
            xt_chunks = layer.rows(np.asarray(t[layer.input_name], np.float32))
            xs_chunks = layer.rows(np.asarray(s[layer.input_name], np.float32))
            for xt, xs in zip(xt_chunks, xs_chunks, strict=True):
                xs0 = _counted(xs[0], batch.feed, tokens)
                xs1 = np.hstack([xs0, np.ones((xs0.shape[0], 1), np.float32)])
                xs1 = xs1.astype(np.float64)
                a[0] += xs1.T @ xs1
                a[1] += xs1.T @ _counted(xt[0], batch.feed, tokens).astype(np.float64)
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
    feats = kept_features(kept, per)
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
    if len(other.uses()) != 1 or const_array(other).shape != (layer.weight.array.shape[1],):
        return None
    return add, 1 - idx


def _add_bias(
    layer: RebuildLayer, slot: tuple[ir.Node, int], delta: np.ndarray, names: NameAllocator
) -> None:
    node, index = slot
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is not None and ir.convenience.get_const_tensor(value) is not None:
        old = const_array(value).astype(np.float32)
        set_constant(value, (old + delta).astype(np.float32))
        return
    name = names.new(f"{layer.name}.bias")
    new = ir.Value(name=name, shape=ir.Shape(delta.shape), type=ir.TensorType(ir.DataType.FLOAT))
    new.const_value = ir.tensor(delta, name=name)
    node.graph.register_initializer(new)  # type: ignore[union-attr]
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, new)


def channel_pass(
    options: CompressOptions, report: CompressReport, calib: Callable[[], DataSource]
) -> PruneChannelsPass:
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

    tokens = None
    if options.task == "embed":
        mask = options.task_settings().mask

        def tokens(feed: dict[str, np.ndarray], rows: int) -> np.ndarray | None:
            weights = token_weights(1, rows, feed, mask)
            return None if weights is None or not weights.any() else weights[0] > 0

    return PruneChannelsPass(
        options.prune_channels or 0.0, lambda _model: calib(), ratio_for=ratio_for,
        report=report, tokens=tokens,
    )  # fmt: skip
