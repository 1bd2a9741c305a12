"""Channel dependency groups: which output channels can be removed, and what else must shrink.

A *producer* (Conv, Gemm, MatMul with an unshared constant weight) makes a tensor whose
channel axis is followed forward through ops that keep channels apart (activations,
bias Add, BatchNormalization, pooling, Pad/Resize that leave the channel axis alone,
depthwise Conv) to its *consumers* (Conv input channels, Gemm/MatMul weight rows).
Flatten, or a Reshape to [batch, features], turns each channel into a run of H*W
features (``Group.per``): the consumer's rows are cut in runs, a literal feature count
in the Reshape's shape is rewritten. Two traced tensors meeting in an elementwise op (a
residual Add, GELU's x * erf(x)) carry the same channels: their groups merge and lose
channels together. A Concat on the channel axis appends its inputs' groups into one
channel space (channels.py: segments). A group whose tensors reach anything not
understood (LayerNormalization, a graph output, a subgraph, a tensor no producer
explains) stays whole, with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import folded_const
from onnxcomp.methods.channels import regroup
from onnxcomp.methods.channels.channels import Group, Segments, Slot, coalesce, width
from onnxcomp.methods.channels.regroup import single_use as _single_use

__all__ = ["Group", "Slot", "find_groups", "producer_axis"]

# Ops that act on each element alone: channels pass through unchanged.
UNARY = frozenset(
    {
        *("Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Erf", "Gelu", "HardSigmoid"),
        *("HardSwish", "Softplus", "Softsign", "Elu", "Selu", "Celu", "Mish", "Identity"),
        *("Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round"),
        *("Sin", "Cos", "Dropout"),
    }
)
BINARY = frozenset(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"])
POOL = frozenset(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"])


def producer_axis(node: ir.Node) -> tuple[int, int] | None:
    """(weight axis, output rank or 0 when unknown) of a prunable producer, else None."""
    if node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    w = node.inputs[1]
    arr = folded_const(w)
    if w is None or arr is None or arr.dtype != np.float32 or not _single_use(w):
        return None
    if node.op_type == "Conv" and arr.ndim >= 3 and node.attributes.get_int("group", 1) == 1:
        return 0, arr.ndim
    if node.op_type == "Gemm" and arr.ndim == 2 and not node.attributes.get_int("transA", 0):
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and (folded_const(bias) is None or folded_const(bias).ndim != 1):  # type: ignore[union-attr]
            return None
        return (0 if node.attributes.get_int("transB", 0) else 1), 2
    if node.op_type == "MatMul" and arr.ndim == 2:
        return 1, 0
    return None


class _Analysis:
    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.owner: dict[ir.Value, Group] = {}
        self.groups: list[Group] = []

    def find(self, g: Group) -> Group:
        while getattr(g, "_merged", None) is not None:
            g = g._merged  # type: ignore[attr-defined]
        return g

    def merge(self, a: Group, b: Group) -> Group:
        a, b = self.find(a), self.find(b)
        if a is b:
            return a
        if a.size != b.size:
            a.block(f"joins a tensor of {b.size} channels with one of {a.size}")
        a.producers += b.producers
        a.consumers += b.consumers
        a.slots += b.slots
        a.values.update(b.values)
        a.per.update(b.per)
        a.segments.update(b.segments)
        a.made.update(b.made)
        a.read.update(b.read)
        a.depthwise += b.depthwise
        a.reshapes += b.reshapes
        a.splits += b.splits
        a.slices += b.slices
        a.must += b.must
        if b.blocked:
            a.block(b.blocked)
        b._merged = a  # type: ignore[attr-defined]
        for v in b.values:
            self.owner[v] = a
        return a

    def append(self, a: Group, b: Group) -> Group:
        """A Concat: ``b``'s channels follow ``a``'s in one group."""
        a, b = self.find(a), self.find(b)
        a.append(b)
        b._merged = a  # type: ignore[attr-defined]
        for v in b.values:
            self.owner[v] = a
        return a

    def run(self) -> list[Group]:
        nodes = list(self.graph)
        for node in nodes:
            found = producer_axis(node)
            if found is None:
                continue
            axis, rank = found
            w = folded_const(node.inputs[1])
            assert w is not None
            size = int(w.shape[axis])
            whole: Segments = ((0, size),)
            g = Group(size=size, producers=[node])
            g.made[id(node)] = whole
            g.slots.append(Slot(node, 1, axis, segments=whole))
            if node.op_type in ("Conv", "Gemm") and len(node.inputs) > 2 and node.inputs[2]:
                g.slots.append(Slot(node, 2, 0, segments=whole))
            self.groups.append(g)
            out = node.outputs[0]
            g.values[out] = (1 - rank) if node.op_type == "Conv" else -1
            g.segments[out] = whole
            self.owner[out] = g
        # Trace in topological order so each tensor's group is known before its readers.
        for node in nodes:
            self.visit(node)
        result = []
        seen: set[int] = set()
        for g in self.groups:
            g = self.find(g)
            if id(g) in seen:
                continue
            seen.add(id(g))
            if not g.consumers:
                g.block("no layer reads these channels")
            result.append(g)
        return result

    def traced(self, value: ir.Value | None) -> Group | None:
        g = self.owner.get(value) if value is not None else None
        return self.find(g) if g is not None else None

    def visit(self, node: ir.Node) -> None:
        hit: list[tuple[int, ir.Value, Group]] = []
        for i, v in enumerate(node.inputs):
            found = self.traced(v)
            if v is not None and found is not None:
                hit.append((i, v, found))
        if not hit:
            return
        op = node.op_type
        if op == "Concat" and node.graph is self.graph and node.domain in ("", "ai.onnx"):
            return self._concat(node, hit)
        g = hit[0][2]
        for _, _, other in hit[1:]:
            g = self.merge(g, other)
        i0, v0, _ = hit[0]
        axis = g.values[v0]
        for _, v, _ in hit:
            if v.is_graph_output():
                g.block(f"tensor {v.name} is a graph output")
        if node.graph is not self.graph or node.domain not in ("", "ai.onnx"):
            g.block(f"read by {op} {node.name} outside the main graph or ONNX domain")
            return
        # Consumers end the trace.
        if self._consume(node, g, hit):
            return
        groups = node.attributes.get_int("group", 1)
        w = folded_const(node.inputs[1]) if len(node.inputs) > 1 else None
        depthwise = op == "Conv" and w is not None and w.shape[1] == 1 and groups == w.shape[0]
        if op in ("Conv", "ConvTranspose") and groups > 1 and not depthwise:
            # Removing channels would have to keep every group the same width.
            return g.block(f"grouped {op} {node.name} reads the channels")
        for out in node.outputs:
            if out.is_graph_output():
                g.block(f"tensor {out.name} is a graph output")
        if op in UNARY or (
            op == "Clip" and all(folded_const(v) is not None for v in node.inputs[1:] if v)
        ):
            if i0 != 0 or len(hit) > 1:
                return g.block(f"{op} {node.name} reads the channels as a parameter")
            if op == "PRelu":
                return g.block(f"PRelu {node.name}: slope not sliced")
            return self._pass(node, g, axis)
        if op in BINARY:
            return self._binary(node, g, hit, axis)
        if op == "BatchNormalization" and i0 == 0 and len(hit) == 1:
            if not self._axis_is(node, axis, 1):
                return g.block(f"BatchNormalization {node.name}: channels not on axis 1")
            if any(folded_const(v) is None for v in node.inputs[1:5]):
                return g.block(f"BatchNormalization {node.name}: parameters not constant")
            for k in range(1, 5):
                g.slots.append(Slot(node, k, 0, segments=g.segments[v0]))
            return self._pass(node, g, axis)
        if op in POOL and i0 == 0 and len(hit) == 1:
            if not self._axis_is(node, axis, 1):
                return g.block(f"{op} {node.name}: channels not on axis 1")
            return self._pass(node, g, axis)
        if op in ("Pad", "Resize") and i0 == 0 and len(hit) == 1:
            return self._pad_resize(node, g, axis)
        if op in ("Flatten", "Reshape") and i0 == 0 and len(hit) == 1:
            return regroup.flatten(self.owner, node, g, v0, axis)
        if op == "Split" and i0 == 0 and len(hit) == 1:
            return regroup.split(self.owner, node, g, v0, axis)
        if op == "Slice" and i0 == 0 and len(hit) == 1:
            return regroup.slice_(self.owner, node, g, v0, axis)
        if op == "Conv" and i0 == 0 and self._depthwise(node, g, axis):
            return None
        g.block(f"{op} {node.name} is not channel-preserving (not understood)")
        return None

    def _axis_is(self, node: ir.Node, axis: int, positive: int) -> bool:
        shape = node.inputs[0].shape if node.inputs[0] is not None else None
        rank = len(shape) if shape is not None else None
        return rank is not None and rank + axis == positive

    def _pass(self, node: ir.Node, g: Group, axis: int) -> None:
        source = next(v for v in node.inputs if v is not None and v in g.values)
        for k, out in enumerate(node.outputs):
            if k == 0:
                g.values[out] = axis
                g.segments[out] = g.segments[source]
                if source in g.per:
                    g.per[out] = g.per[source]
                self.owner[out] = g
            elif out.uses() or out.is_graph_output():
                g.block(f"{node.op_type} {node.name}: second output is read")

    def _binary(self, node: ir.Node, g: Group, hit, axis: int) -> None:
        for i, v in enumerate(node.inputs):
            if v is None or self.traced(v) is not None:
                continue
            arr = folded_const(v)
            if arr is None:
                return g.block(
                    f"{node.op_type} {node.name} joins the channels with {v.name}, "
                    "which no prunable layer produces"
                )
            first = hit[0][1]
            per = g.per.get(first, 1)
            if arr.ndim >= -axis and arr.shape[arr.ndim + axis] != 1:
                if arr.shape[arr.ndim + axis] != width(g.segments[first]) * per:
                    return g.block(f"{node.op_type} {node.name}: constant does not broadcast")
                g.slots.append(Slot(node, i, arr.ndim + axis, per, g.segments[first]))
            if node.op_type in ("Pow",) and i == 1 and arr.size != 1:
                return g.block(f"Pow {node.name}: per-channel exponent")
        axes = {(g.values[v], g.per.get(v, 1), g.segments[v]) for _, v, _ in hit}
        if len(axes) > 1:
            return g.block(f"{node.op_type} {node.name}: channel axes differ between inputs")
        self._pass(node, g, axis)
        return None

    def _pad_resize(self, node: ir.Node, g: Group, axis: int) -> None:
        shape = node.inputs[0].shape  # type: ignore[union-attr]
        if shape is None:
            return g.block(f"{node.op_type} {node.name}: input rank unknown")
        pos = len(shape) + axis
        if node.op_type == "Pad":
            pads = folded_const(node.inputs[1]) if len(node.inputs) > 1 else None
            axes = folded_const(node.inputs[3]) if len(node.inputs) > 3 else None
            if pads is None or axes is not None:
                return g.block(f"Pad {node.name}: pads not a plain constant")
            half = len(pads) // 2
            if pads[pos] != 0 or pads[half + pos] != 0:
                return g.block(f"Pad {node.name} pads the channel axis")
        else:
            scales = folded_const(node.inputs[2]) if len(node.inputs) > 2 else None
            sizes = node.inputs[3] if len(node.inputs) > 3 else None
            if sizes is not None or scales is None or scales[pos] != 1:
                return g.block(f"Resize {node.name}: channel axis not kept by constant scales")
        self._pass(node, g, axis)
        return None

    def _depthwise(self, node: ir.Node, g: Group, axis: int) -> bool:
        w = folded_const(node.inputs[1])
        segs = g.segments[node.inputs[0]]  # type: ignore[index]
        n = width(segs)
        groups = node.attributes.get_int("group", 1)
        if w is None or groups != n or w.shape[0] != n or w.shape[1] != 1:
            return False
        if not _single_use(node.inputs[1]) or axis != 1 - w.ndim:  # type: ignore[arg-type]
            return False
        g.slots.append(Slot(node, 1, 0, segments=segs))
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            g.slots.append(Slot(node, 2, 0, segments=segs))
        g.depthwise.append((node, segs))
        self._pass(node, g, axis)
        return True

    def _consume(self, node: ir.Node, g: Group, hit) -> bool:
        """Conv / Gemm / MatMul reading the channels as their input features."""
        if len(hit) != 1 or hit[0][0] != 0 or len(node.inputs) < 2:
            return False
        axis = g.values[hit[0][1]]
        per = g.per.get(hit[0][1], 1)
        segs = g.segments[hit[0][1]]
        n = width(segs)
        w_value = node.inputs[1]
        w = folded_const(w_value)
        op = node.op_type
        if op not in ("Conv", "Gemm", "MatMul") or w is None or w.dtype != np.float32:
            return False
        if op == "Conv" and node.attributes.get_int("group", 1) != 1:
            return False
        if not _single_use(w_value):  # type: ignore[arg-type]
            g.block(f"{op} {node.name}: weight {w_value.name} is shared")  # type: ignore[union-attr]
            return True
        trans_b = node.attributes.get_int("transB", 0)
        if op == "Conv" and axis == 1 - w.ndim and w.shape[1] == n and per == 1:
            g.slots.append(Slot(node, 1, 1, segments=segs))
        elif (
            op == "Gemm"
            and axis == -1
            and not node.attributes.get_int("transA", 0)
            and w.shape[1 if trans_b else 0] == n * per
        ):
            g.slots.append(Slot(node, 1, 1 if trans_b else 0, per, segs))
        elif op == "MatMul" and axis == -1 and w.ndim == 2 and w.shape[0] == n * per:
            g.slots.append(Slot(node, 1, 0, per, segs))
        else:
            g.block(f"{op} {node.name} reads the channels in a way not understood")
            return True
        g.consumers.append(node)
        g.read[id(node)] = segs
        return True

    def _concat(self, node: ir.Node, hit) -> None:
        """Inputs along their channel axis: one group, the output carrying their segments
        in input order (an input read twice carries its channels twice)."""
        groups = [g for _, _, g in hit]
        g = groups[0]
        for other in groups[1:]:
            if self.find(other) is not self.find(g):
                g = self.append(g, other)
        g = self.find(g)
        first = hit[0][1]
        axis = g.values[first]
        rank = len(first.shape) if first.shape is not None else None
        cat_axis = node.attributes.get_int("axis", 0)
        missing = [v.name if v else "?" for v in node.inputs if v is None or not self.traced(v)]
        if missing:
            return g.block(f"Concat {node.name}: input {missing[0]} is not from a prunable layer")
        shared = [v.name for _, v, _ in hit if v.is_graph_output()]
        if shared:
            return g.block(f"tensor {shared[0]} is a graph output")
        if rank is None or cat_axis % rank != rank + axis:
            return g.block(f"Concat {node.name} does not join along the channel axis")
        if any(g.values[v] != axis or v in g.per for _, v, _ in hit):
            return g.block(f"Concat {node.name}: inputs carry channels differently")
        out = node.outputs[0]
        if out.is_graph_output():
            return g.block(f"tensor {out.name} is a graph output")
        g.values[out] = axis
        g.segments[out] = coalesce(tuple(seg for _, v, _ in hit for seg in g.segments[v]))
        self.owner[out] = g
        return None


def find_groups(model: ir.Model) -> list[Group]:
    """Every dependency group of the main graph, blocked ones with their reason."""
    return _Analysis(model.graph).run()
