"""Bias correction over a model: measure each compressed layer's mean shift, fold it in.

A layer qualifies when its weight differs from the teacher's (pruned, or fed by a
DequantizeLinear) and its output exists under the same name in the teacher. The
teacher's channel means come from one run; the student is re-run once per round so a
layer is corrected after the layers feeding it (their corrections change its input).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer, const
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.io.data import DataSource
from onnxcomp.methods.recover.driver import RecoverRecord
from onnxcomp.methods.recover.layers import assign_rounds
from onnxcomp.numerics.bias_correction import (
    ChannelMean,
    corrected_bias,
    corrected_int_bias,
    mean_shift,
)
from onnxcomp.runtime import capture

logger = logging.getLogger(__name__)

OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class BiasLayer:
    node: ir.Node
    round: int = 0

    @property
    def output(self) -> str:
        return self.node.outputs[0].name or ""

    @property
    def axis(self) -> int:
        """Output-channel axis of the layer's output."""
        return 1 if self.node.op_type in ("Conv", "ConvTranspose") else -1


def _weight_changed(node: ir.Node, teacher: dict[str, ir.Value]) -> bool:
    w = node.inputs[1] if len(node.inputs) > 1 else None
    if w is None:
        return False
    producer = w.producer()
    if producer is not None and producer.op_type == "DequantizeLinear":
        # a quantized weight; an activation behind its Q/DQ pair (attention's K) is no layer
        q = producer.inputs[0]
        return q is not None and q.const_value is not None
    mine, theirs = const(w), const(teacher.get(w.name or ""))
    return mine is not None and theirs is not None and not np.array_equal(mine, theirs)


def find_bias_layers(teacher: ir.Model, student: ir.Model) -> list[BiasLayer]:
    t_values: dict[str, ir.Value] = {}
    for node in teacher.graph:
        for out in node.outputs:
            t_values[out.name or ""] = out
    t_values.update(teacher.graph.initializers)
    candidates = {}
    for node in student.graph:
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx"):
            continue
        if node.outputs[0].name not in t_values or not _weight_changed(node, t_values):
            continue
        candidates[id(node)] = BiasLayer(node)
    return assign_rounds(student.graph, candidates)


def correct_biases(
    teacher: ir.Model, student: ir.Model, calib: DataSource, threads: int = 0
) -> list[RecoverRecord]:
    """Fold every compressed layer's mean output shift into its bias, round by round."""
    layers = find_bias_layers(teacher, student)
    if not layers:
        return []
    t_means = {layer.output: ChannelMean(layer.axis) for layer in layers}
    for _, values in capture.stream(teacher, list(t_means), calib, threads):
        for name, acc in t_means.items():
            acc.update(values[name])
    names = NameAllocator(student)
    by_round: dict[int, list[BiasLayer]] = defaultdict(list)
    for layer in layers:
        by_round[layer.round].append(layer)
    records = []
    for r in sorted(by_round):
        s_means = {layer.output: ChannelMean(layer.axis) for layer in by_round[r]}
        for _, values in capture.stream(student, list(s_means), calib, threads):
            for name, acc in s_means.items():
                acc.update(values[name])
        for layer in by_round[r]:
            t_mean = t_means[layer.output]
            shift = mean_shift(s_means[layer.output], t_mean)
            note = fold(layer.node, shift, student.graph, names)
            scale = float(np.sqrt(np.mean(t_mean.mean**2))) or 1.0
            rms = float(np.sqrt(np.mean(shift**2)))
            records.append(
                RecoverRecord(
                    layer.node.name or layer.output,
                    _name(layer.node.inputs[1]),
                    layer.node.op_type,
                    "bias",
                    rms / scale,
                    None if note.startswith("skipped") else 0.0,
                    note,
                )
            )
            logger.info("bias %s: mean shift rms %.3g (%s)", layer.output, rms, note)
    return records


def _name(value: ir.Value | None) -> str:
    return (value.name if value is not None else None) or ""


def fold(node: ir.Node, shift: np.ndarray, graph: ir.Graph, names: NameAllocator) -> str:
    """Subtract ``shift`` (per output channel) from the node's bias; say what was done."""
    if node.op_type == "MatMul":
        return _fold_matmul(node, shift, graph, names)
    beta = node.attributes.get_float("beta", 1.0) if node.op_type == "Gemm" else 1.0
    if beta == 0.0:
        return "skipped: Gemm with beta = 0"
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is None:
        new = add_initializer(
            graph, names.new(f"{node.name or 'layer'}_bias"), np.asarray(-shift / beta, np.float32)
        )
        node.resize_inputs(3)
        node.replace_input_with(2, new)
        return "new bias"
    return _adjust(node, 2, bias, shift / beta, graph, names)


def _adjust(node: ir.Node, index: int, bias: ir.Value, shift: np.ndarray, graph, names) -> str:
    """Move a float or DequantizeLinear(int32) bias by -shift, copying it if shared."""
    producer = bias.producer()
    if producer is not None and producer.op_type == "DequantizeLinear":
        q, scale = const(producer.inputs[0]), const(producer.inputs[1])
        zp = const(producer.inputs[2]) if len(producer.inputs) > 2 else None
        if q is None or scale is None or (zp is not None and np.any(zp)):
            return "skipped: bias is not a constant"
        q_value = producer.inputs[0]
        assert q_value is not None
        if len(bias.uses()) != 1 or len(q_value.uses()) != 1:
            return "skipped: quantized bias is shared"
        new_q = corrected_int_bias(q, scale, shift)
        q_value.const_value = ir.tensor(new_q, name=q_value.name)
        return "int32 bias adjusted"
    current = const(bias)
    if current is None or not bias.is_initializer():
        return "skipped: bias is not a constant"
    new = corrected_bias(current, shift)
    if len(bias.uses()) == 1 and new.shape == current.shape:
        bias.const_value = ir.tensor(new.astype(current.dtype), name=bias.name)
        return "bias adjusted"
    value = add_initializer(
        graph,
        names.new(f"{bias.name}_corrected"),
        np.asarray(new.astype(current.dtype), np.float32),
    )
    node.replace_input_with(index, value)
    return "bias copied and adjusted"


def _fold_matmul(node: ir.Node, shift: np.ndarray, graph: ir.Graph, names) -> str:
    """Into a following Add(x, bias) when there is one, else a new Add after the MatMul."""
    out = node.outputs[0]
    uses = list(out.uses())
    if len(uses) == 1 and not out.is_graph_output():
        add, idx = uses[0].node, uses[0].idx
        other = add.inputs[1 - idx] if add.op_type == "Add" and len(add.inputs) == 2 else None
        if other is not None and other.is_initializer() and other.shape is not None:
            dims = list(other.shape)
            if dims and dims[-1] == shift.size and all(d == 1 for d in dims[:-1]):
                return _adjust(add, 1 - idx, other, shift, graph, names)
    name = out.name or names.new("matmul_out")
    bias = add_initializer(
        graph, names.new(f"{node.name or name}_bias"), np.asarray(-shift, np.float32)
    )
    out.name = names.new(f"{name}_unbiased")
    add = ir.node("Add", [out, bias], name=names.new(f"{node.name or name}_bias_add"))
    result = add.outputs[0]
    result.dtype, result.shape = out.dtype, out.shape  # type: ignore[assignment]
    out.replace_all_uses_with(result, replace_graph_outputs=True)
    add.replace_input_with(0, out)  # the line above redirected the Add's own input too
    result.name = name
    graph.insert_after(node, add)
    return "new bias Add"
