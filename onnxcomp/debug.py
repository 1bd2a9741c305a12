"""Where does the error come from? Per-layer SQNR of a compressed model against its original.

Both models run on the same inputs; every float tensor a node of the original produces
is compared with the compressed model's tensor of the same name (our passes keep node
output names). When that tensor is re-quantized (QuantizeLinear -> DequantizeLinear),
the DequantizeLinear output is compared: it is what the next layer actually reads.

Error accumulates downstream, so ranking by output error alone would blame the last
layers. Each layer is ranked by the relative error it *adds*: its output's relative
error minus the worst relative error among its inputs. Signal and noise energies are
summed batch by batch; no output is kept.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.io import model_io
from onnxcomp.io.data import DataSource, input_specs, open_data
from onnxcomp.numerics.scales import quantize
from onnxcomp.runtime import capture

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather")
# A layer adding at least this relative error gets a hint.
HINT_THRESHOLD = 0.01


@dataclass
class Energy:
    signal: float = 0.0
    noise: float = 0.0

    def update(self, ref: np.ndarray, new: np.ndarray) -> None:
        r = np.asarray(ref, np.float64)
        d = np.asarray(new, np.float64) - r
        self.signal += float(np.vdot(r, r))
        self.noise += float(np.vdot(d, d))

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0:
            return math.inf
        if self.signal == 0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    @property
    def rel_error(self) -> float:
        if self.noise == 0:
            return 0.0
        return math.sqrt(self.noise / self.signal) if self.signal > 0 else math.inf


@dataclass
class LayerError:
    tensor: str  # the original model's tensor
    node: str
    op_type: str
    compared: str  # the compressed model's tensor it was compared with
    sqnr_db: float
    rel_error: float
    input_rel_error: float  # worst relative error among the node's inputs
    added_error: float  # rel_error - input_rel_error: what this layer contributes
    quantized_output: bool  # the compressed tensor passes through Q/DQ
    weights: str = ""  # how its weight was compressed: quantized, pruned, both or ""
    hint: str = ""
    index: int = 0  # position in the original graph's order (layers are sorted worst first)
    # The task metric's drop won back when this layer alone gets its original weight
    # (the compressed model otherwise unchanged); None: not measured (no weight, or past
    # the TASK_LAYERS worst).
    task_effect: float | None = None


@dataclass
class DebugResult:
    original: str
    compressed: str
    data: str
    synthetic: bool
    samples: int
    layers: list[LayerError] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    # Tensors whose channel count changed (structured pruning): name -> "before -> after".
    channels: dict[str, str] = field(default_factory=dict)
    metric: str = ""  # what task_effect is measured in (metrics.Judge)
    drop: float | None = None  # the compressed model's drop in it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _requantized(value: ir.Value) -> ir.Value | None:
    """The DequantizeLinear output when ``value`` feeds QuantizeLinear -> DequantizeLinear."""
    for use in value.uses():
        if use.node.op_type != "QuantizeLinear" or use.idx != 0:
            continue
        for inner in use.node.outputs[0].uses():
            if inner.node.op_type == "DequantizeLinear" and inner.idx == 0:
                return inner.node.outputs[0]
    return None


def _values_by_name(model: ir.Model) -> dict[str, ir.Value]:
    found = {v.name: v for v in model.graph.inputs if v.name}
    for node in model.graph:
        for out in node.outputs:
            if out.name:
                found[out.name] = out
    return found


def _const(value: ir.Value | None) -> np.ndarray | None:
    """A constant, also one stored float16 behind a Cast (passes/float16_vectors.py)."""
    if value is None:
        return None
    if value.const_value is None:
        cast = value.producer()
        if cast is None or cast.op_type != "Cast" or cast.inputs[0] is None:
            return None
        inner = cast.inputs[0].const_value
        return inner.numpy().astype(np.float32) if inner is not None else None
    return value.const_value.numpy()


def _decoded_at_load(node: ir.Node) -> bool:
    """Mul(Cast(int8 constant), scale constant): decode_at_load's form of an int8 weight."""
    if node.op_type != "Mul" or len(node.inputs) != 2 or _const(node.inputs[1]) is None:
        return False
    cast = node.inputs[0].producer() if node.inputs[0] is not None else None
    if cast is None or cast.op_type != "Cast":
        return False
    q = _const(cast.inputs[0])
    return q is not None and q.dtype == np.int8


def weight_state(node: ir.Node | None, original: ir.Node | None) -> str:
    """How a compressed layer's weight was changed: "quantized", "pruned", both, or "".

    Pruned means more zeros than the original weight has (or, quantized, than rounding
    it with the same scales would give): small weights rounding to 0 are not pruning.
    """
    if node is None or node.op_type not in WEIGHT_OPS or len(node.inputs) < 2:
        return ""
    index = 0 if node.op_type == "Gather" else 1
    w = node.inputs[index]
    ref = _const(original.inputs[index]) if original is not None else None
    if w is None:
        return ""
    producer = w.producer()
    states = []
    values, expected = _const(w), None if ref is None else int(np.count_nonzero(ref == 0))
    if producer is not None and producer.op_type == "DequantizeLinear":
        states.append("quantized")
        values, scale = _const(producer.inputs[0]), _const(producer.inputs[1])
        if (
            values is not None
            and scale is not None
            and ref is not None
            and ref.shape == values.shape
        ):
            axis = producer.attributes.get_int("axis", 1) % values.ndim if scale.ndim else None
            expected = int(np.count_nonzero(quantize(ref, scale, 0, axis=axis) == 0))
    elif producer is not None and _decoded_at_load(producer):
        states.append("quantized")  # Cast(int8) * scale, folded by onnxruntime at load
        cast = producer.inputs[0].producer()  # type: ignore[union-attr]
        values = _const(cast.inputs[0])  # type: ignore[union-attr]
        scale = _const(producer.inputs[1])
        known = values is not None and scale is not None and ref is not None
        if known and ref.shape == values.shape:  # type: ignore[union-attr]
            expected = int(np.count_nonzero(np.rint(ref / scale) == 0))  # type: ignore[operator]
    extra_zeros = (
        np.count_nonzero(values == 0) - expected
        if values is not None and expected is not None
        else 0
    )
    if values is not None and extra_zeros > 0.01 * values.size:
        states.append("pruned")
    return "+".join(states)


def match_tensors(
    original: ir.Model, compressed: ir.Model
) -> tuple[list[tuple[ir.Node, str, str, bool]], list[str]]:
    """(original node, original tensor, compressed tensor, requantized) per node output."""
    theirs = _values_by_name(compressed)
    pairs, unmatched = [], []
    for node in original.graph:
        for out in node.outputs:
            if not out.name:
                continue
            if out.dtype is not None and out.dtype not in (
                ir.DataType.FLOAT,
                ir.DataType.FLOAT16,
                ir.DataType.DOUBLE,
            ):
                continue
            value = theirs.get(out.name)
            if value is None:
                unmatched.append(out.name)
                continue
            dq = _requantized(value)
            name = dq.name if dq is not None and dq.name else out.name
            pairs.append((node, out.name, name, dq is not None))
    return pairs, unmatched


def debug(
    original_path: str | os.PathLike,
    compressed_path: str | os.PathLike,
    data: Any,
    *,
    threads: int = 0,
    options: Any = None,
) -> DebugResult:
    """Per-layer error of COMPRESSED against ORIGINAL on ``data``, worst contributor first."""
    if data is None:
        raise OnnxcompError("debug needs --data: the inputs both models run on")
    ref = model_io.load(original_path)
    new = model_io.load(compressed_path)
    specs = input_specs(ref)
    if [s.name for s in specs] != [s.name for s in input_specs(new)]:
        raise OnnxcompError("the two models have different inputs")
    source: DataSource = open_data(data, specs)
    pairs, unmatched = match_tensors(ref, new)
    theirs = _values_by_name(new)
    energies: dict[str, Energy] = {orig: Energy() for _, orig, _, _ in pairs}
    ref_sess = capture.session(ref, [p[1] for p in pairs], threads)
    new_sess = capture.session(new, [p[2] for p in pairs], threads)
    samples = 0
    skipped: set[str] = set()  # shapes differ: reported as not compared
    ignored: set[str] = set()  # not float (shapes, indices): nothing to measure
    channels: dict[str, str] = {}
    for batch in source:
        a = capture.run(ref_sess, [p[1] for p in pairs], batch.feed)
        b = capture.run(new_sess, [p[2] for p in pairs], batch.feed)
        for _, orig, comp, _ in pairs:
            x, y = np.asarray(a[orig]), np.asarray(b[comp])
            if x.dtype.kind != "f":
                ignored.add(orig)
            elif x.shape != y.shape:
                skipped.add(orig)
                axes = [i for i in range(x.ndim) if x.ndim == y.ndim and x.shape[i] != y.shape[i]]
                if len(axes) == 1:  # one axis shrank: channels removed
                    channels[orig] = f"{x.shape[axes[0]]} -> {y.shape[axes[0]]}"
            else:
                energies[orig].update(x, y)
        samples += batch.size
        del a, b
    if samples == 0:
        raise OnnxcompError("the data source yielded no samples")
    result = DebugResult(
        str(original_path),
        str(compressed_path),
        source.description,
        source.synthetic,
        samples,
        unmatched=unmatched + sorted(skipped),
        channels=channels,
    )
    gone = skipped | ignored
    rel = {name: e.rel_error for name, e in energies.items() if name not in gone}
    for index, (node, orig, comp, requant) in enumerate(pairs):
        if orig in gone:
            continue
        inputs = [rel[v.name] for v in node.inputs if v is not None and v.name in rel]
        worst_in = max(inputs, default=0.0)
        e = energies[orig]
        layer = LayerError(
            tensor=orig,
            node=node.name or orig,
            op_type=node.op_type,
            compared=comp,
            sqnr_db=e.sqnr_db,
            rel_error=e.rel_error,
            input_rel_error=worst_in,
            added_error=e.rel_error - worst_in,
            quantized_output=requant,
            weights=weight_state(theirs[orig].producer() if orig in theirs else None, node),
            index=index,
        )
        layer.hint = _hint(layer, _upstream_weight(node))
        result.layers.append(layer)
    result.layers.sort(key=lambda layer: (-_finite(layer.added_error), -_finite(layer.rel_error)))
    task_effects(ref, new, source, result, options)
    result.layers.sort(key=lambda la: (-(la.task_effect or 0.0), -_finite(la.added_error)))
    return result


TASK_LAYERS = 8  # weighted layers (worst added error first) whose task effect is measured


def task_effects(
    ref: ir.Model, new: ir.Model, source: DataSource, result: DebugResult, options: Any
) -> None:
    """Each of the worst weighted layers restored alone to its original weight: how much
    of the compressed model's task drop (metrics.Judge: --task, or the worst component)
    that wins back. Layers are then ranked by it, SQNR beside."""
    from onnxcomp.metrics.judge import Reference
    from onnxcomp.runtime.session import make_session

    originals = {n.name: n for n in ref.graph if n.name}
    reference = Reference(make_session(ref), [b.feed for b in source], options)

    def drop(model: ir.Model) -> tuple[float, str]:
        verdict = reference.verdict(model)
        return verdict.drop, verdict.metric

    result.drop, result.metric = drop(new)
    if not result.drop:
        return
    chosen = [la for la in result.layers if la.weights and la.node in originals]
    for layer in chosen[:TASK_LAYERS]:
        trial = new.clone()
        if _restore(trial, originals[layer.node]):
            layer.task_effect = result.drop - drop(trial)[0]


def _restore(model: ir.Model, original: ir.Node) -> bool:
    """Give the node of ``original``'s name in ``model`` the original's weight input."""
    index = 0 if original.op_type == "Gather" else 1
    weight = _const(original.inputs[index]) if len(original.inputs) > index else None
    node = next((n for n in model.graph if n.name == original.name), None)
    if weight is None or node is None or len(node.inputs) <= index:
        return False
    value = ir.Value(name=f"{original.name}__original_weight", const_value=ir.tensor(weight))
    model.graph.initializers.add(value)
    node.replace_input_with(index, value)
    return True


def _upstream_weight(node: ir.Node, depth: int = 6) -> str | None:
    """The nearest layer with a weight that feeds ``node`` (a Sigmoid's error is made by
    the Conv before it: that is what a hint should name)."""
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for v in n.inputs:
                p = v.producer() if v is not None else None
                if p is None:
                    continue
                if p.op_type in WEIGHT_OPS and len(p.inputs) > 1:
                    return p.name or None
                nxt.append(p)
        frontier = nxt
    return None


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e300


def _hint(layer: LayerError, upstream: str | None = None) -> str:
    if layer.added_error < HINT_THRESHOLD:
        return ""
    name = layer.node
    if not layer.weights and not layer.quantized_output and upstream:
        return (
            f"error grows here ({layer.op_type}, no weight) from {upstream}'s output: "
            f"--exclude {upstream} or --recover gptq"
        )
    if layer.weights:
        repair = "sparsegpt" if "pruned" in layer.weights else "gptq"
        return (
            f"{layer.weights} weights lose accuracy here: --recover {repair} (or bias), "
            f"or keep it float with --exclude {name}"
        )
    if layer.quantized_output:
        return f"activation rounding: try --calib-method percentile or mse, or --exclude {name}"
    return f"error grows here: keep it float with --exclude {name}"
