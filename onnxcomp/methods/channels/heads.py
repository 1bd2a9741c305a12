"""Attention heads as channel groups: the exporter pattern of multi-head attention.

    x -> MatMul(Wq) [-> Add(bq)] -> Reshape([.., .., H, dh]) -> Transpose(0,2,1,3) = Q
    x -> MatMul(Wk) [-> Add(bk)] -> Reshape -> Transpose(0,2,3,1)            = K^T
    x -> MatMul(Wv) [-> Add(bv)] -> Reshape -> Transpose(0,2,1,3)            = V
    Softmax((Q @ K^T) / s + mask) @ V -> Transpose(0,2,1,3) -> Reshape([.., .., D])
      -> MatMul(Wo)

Exporters that flatten the tokens first (``Reshape([-1, D]) -> Gemm(W, b)``, then
``Reshape([B, T, H, dh])``; the context ``Reshape([-1, D]) -> Gemm(Wo)``) are the same
pattern with Gemm for MatMul + Add.

A head is dh columns of Wq, Wk, Wv (and their biases) and dh rows of Wo: removing it
keeps every other head's scores, softmax and context exact. So a head block is one
channel ``Group`` over the D = H * dh features (kept features come in whole heads), and
the head count in the Reshape shapes is rewritten. Anything else reading the tensors in
between (other than Shape ops reading batch and sequence sizes) leaves the block whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import folded_const
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.methods.channels.groups import Group, Slot

QV_PERM = (0, 2, 1, 3)
K_PERM = (0, 2, 3, 1)


@dataclass
class ShapeEntry:
    """One number of a Reshape's target shape: in a constant shape tensor, or a
    one-element constant part of a Concat building it."""

    node: ir.Node  # the Reshape, or the Concat
    index: int  # input index on ``node`` holding the constant
    position: int  # element within that constant


@dataclass
class HeadBlock:
    group: Group  # size = D features; producers Q/K/V MatMuls, consumer the out MatMul
    heads: int
    head_dim: int
    counts: list[ShapeEntry]  # the H in the Q/K/V Reshapes (none where it is -1)
    width: ShapeEntry | None  # the D in the context Reshape (None where it is -1)


def _only_use(value: ir.Value) -> ir.Node | None:
    """The one consumer of ``value`` besides Shape ops (which read batch/seq sizes)."""
    if value.is_graph_output():
        return None
    users = [n for n, _ in value.uses() if n.op_type != "Shape"]
    return users[0] if len(users) == 1 else None


def _perm(node: ir.Node | None) -> tuple[int, ...] | None:
    if node is None or node.op_type != "Transpose":
        return None
    attr = node.attributes.get("perm")
    return tuple(attr.as_ints()) if attr is not None else None


def _shape_entry(reshape: ir.Node, position: int) -> tuple[ShapeEntry, int] | None:
    """Where element ``position`` of the Reshape's target shape is stored, and its value."""
    shape = reshape.inputs[1] if len(reshape.inputs) > 1 else None
    arr = folded_const(shape)
    if arr is not None:
        if arr.ndim != 1 or position >= arr.size:
            return None
        return ShapeEntry(reshape, 1, position), int(arr[position])
    concat = shape.producer() if shape is not None else None
    if concat is None or concat.op_type != "Concat" or position >= len(concat.inputs):
        return None
    part = folded_const(concat.inputs[position])
    if part is None or part.size != 1:
        return None
    return ShapeEntry(concat, position, 0), int(part.reshape(-1)[0])


def _projection(value: ir.Value, group: Group) -> ir.Value | None:
    """Walk back from a Reshape input to MatMul(x, W) [+ bias]; record the slots."""
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Add":
        consts = [i for i in (0, 1) if folded_const(node.inputs[i]) is not None]
        if len(consts) != 1:
            return None
        other = node.inputs[1 - consts[0]]
        if other is None or _only_use(other) is not node:
            return None
        group.slots.append(Slot(node, consts[0], -1))
        node = other.producer()
        if node is None:
            return None
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("MatMul", "Gemm"):
        return None
    axis = _weight_axis(node, output=True)
    w = folded_const(node.inputs[1])
    weight = node.inputs[1]
    if axis is None or w is None or w.ndim != 2 or weight is None or len(weight.uses()) != 1:
        return None
    group.slots.append(Slot(node, 1, axis))
    if node.op_type == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = folded_const(node.inputs[2])
        if bias is None or bias.ndim != 1 or len(node.inputs[2].uses()) != 1:
            return None
        group.slots.append(Slot(node, 2, 0))
    group.producers.append(node)
    return node.inputs[0]


def _weight_axis(node: ir.Node, *, output: bool) -> int | None:
    """The axis of a MatMul/Gemm weight that holds its output (or input) features; None
    for a Gemm this cannot slice (transposed A, a bias of another shape)."""
    if node.op_type == "MatMul":
        return 1 if output else 0
    if node.attributes.get_int("transA", 0):
        return None
    trans_b = node.attributes.get_int("transB", 0)
    return (0 if trans_b else 1) if output else (1 if trans_b else 0)


def _last_entry(reshape: ir.Node) -> tuple[ShapeEntry, int] | None:
    """The last number of a Reshape's target shape: the width D of the context, whether
    the tokens stay [B, T, D] or are flattened to [B * T, D]."""
    shape = reshape.inputs[1] if len(reshape.inputs) > 1 else None
    arr = folded_const(shape)
    if arr is not None:
        return _shape_entry(reshape, arr.size - 1) if arr.ndim == 1 and arr.size else None
    concat = shape.producer() if shape is not None else None
    if concat is None or concat.op_type != "Concat" or not concat.inputs:
        return None
    return _shape_entry(reshape, len(concat.inputs) - 1)


def _head_input(value: ir.Value | None, perm: tuple[int, ...]) -> ir.Node | None:
    """The Reshape feeding ``Transpose(perm)`` that makes ``value``."""
    t = value.producer() if value is not None else None
    if _perm(t) != perm or t is None or t.inputs[0] is None:
        return None
    reshape = t.inputs[0].producer()
    if reshape is None or reshape.op_type != "Reshape" or _only_use(t.inputs[0]) is not t:
        return None
    return reshape


def _scores_matmul(softmax: ir.Node) -> ir.Node | None:
    """Back from Softmax through the scale and mask (ops with a side input) to Q @ K^T."""
    value = softmax.inputs[0]
    for _ in range(4):
        node = value.producer() if value is not None else None
        if node is None:
            return None
        if node.op_type == "MatMul":
            return node
        if node.op_type not in ("Add", "Div", "Mul", "Sub") or value is None:
            return None
        if _only_use(value) is None:
            return None
        value = node.inputs[0]
    return None


def _block(softmax: ir.Node) -> HeadBlock | None:
    axis = softmax.attributes.get_int("axis", -1)
    if axis not in (-1, 3):
        return None
    qk = _scores_matmul(softmax)
    pv = _only_use(softmax.outputs[0])
    if qk is None or pv is None or pv.op_type != "MatMul" or pv.inputs[0] is not softmax.outputs[0]:
        return None
    reshapes = [
        _head_input(qk.inputs[0], QV_PERM),
        _head_input(qk.inputs[1], K_PERM),
        _head_input(pv.inputs[1], QV_PERM),
    ]
    if any(r is None for r in reshapes):
        return None
    back = _only_use(pv.outputs[0])
    if _perm(back) != QV_PERM or back is None:
        return None
    out_reshape = _only_use(back.outputs[0])
    if out_reshape is None or out_reshape.op_type != "Reshape":
        return None
    out = _only_use(out_reshape.outputs[0])
    ok = out is not None and out.op_type in ("MatMul", "Gemm") and out.domain in ("", "ai.onnx")
    in_axis = _weight_axis(out, output=False) if out is not None and ok else None
    wo = folded_const(out.inputs[1]) if out is not None and in_axis is not None else None
    if out is None or wo is None or wo.ndim != 2 or out.inputs[0] is not out_reshape.outputs[0]:
        return None
    assert in_axis is not None
    group = Group(size=int(wo.shape[in_axis]))
    counts, heads, head_dim, source = [], set(), set(), set()
    for reshape in reshapes:
        assert reshape is not None
        h = _shape_entry(reshape, 2)
        d = _shape_entry(reshape, 3)
        if h is None or d is None or reshape.inputs[0] is None:
            return None
        if _only_use(reshape.inputs[0]) is not reshape:
            return None
        x = _projection(reshape.inputs[0], group)
        if x is None:
            return None
        resolved = _heads_and_dim(h[1], d[1], group.size)
        if resolved is None:
            return None
        if h[1] != -1:  # an inferred (-1) head count follows the cut by itself
            counts.append(h[0])
        heads.add(resolved[0])
        head_dim.add(resolved[1])
        source.add(id(x))
    width = _last_entry(out_reshape)
    if len(heads) != 1 or len(head_dim) != 1 or width is None or len(source) != 1:
        return None
    (n_heads,), (dh,) = heads, head_dim
    if width[1] not in (group.size, -1) or out.inputs[1] is None:
        return None
    if len(out.inputs[1].uses()) != 1:
        return None
    group.consumers.append(out)
    group.slots.append(Slot(out, 1, in_axis))
    return HeadBlock(group, n_heads, dh, counts, width[0] if width[1] != -1 else None)


def _heads_and_dim(heads: int, dim: int, size: int) -> tuple[int, int] | None:
    """(H, dh) of a [.., H, dh] Reshape over ``size`` features, either one given as -1."""
    if heads == -1 and dim > 0 and size % dim == 0:
        heads = size // dim
    elif dim == -1 and heads > 0 and size % heads == 0:
        dim = size // heads
    return (heads, dim) if heads > 0 and heads * dim == size else None


def find_heads(model: ir.Model) -> list[HeadBlock]:
    """Every multi-head attention block of the main graph in the exporter pattern."""
    blocks = []
    for node in model.graph:
        if node.op_type == "Softmax" and node.domain in ("", "ai.onnx"):
            block = _block(node)
            if block is not None:
                blocks.append(block)
    return blocks


def set_entry(entry: ShapeEntry, number: int, names: NameAllocator) -> None:
    """Rewrite one number of a target shape (into a new constant: the old may be shared)."""
    value = entry.node.inputs[entry.index]
    arr = folded_const(value)
    assert value is not None and arr is not None and entry.node.graph is not None
    new = arr.copy().reshape(-1)
    new[entry.position] = number
    new = new.reshape(arr.shape)
    name = names.new(f"{value.name}_heads")
    replacement = ir.Value(name=name, shape=ir.Shape(new.shape), type=value.type)
    replacement.const_value = ir.tensor(new, name=name)
    entry.node.graph.register_initializer(replacement)
    entry.node.replace_input_with(entry.index, replacement)


def heads_kept(block: HeadBlock, ratio: float) -> int:
    return max(1, block.heads - int(np.floor(ratio * block.heads + 1e-9)))


def plan_heads(
    model: ir.Model, ratio_for, default: float, taken: set[int]
) -> list[tuple[HeadBlock, int]]:
    """Blocks to cut and how many heads each keeps; a block sharing a node with a channel
    group already cut (``taken``: node ids) is left alone."""
    out = []
    for block in find_heads(model):
        nodes = {id(n) for n in (*block.group.producers, *block.group.consumers)}
        if nodes & taken:
            continue
        ratio = ratio_for(block.group)
        keep = heads_kept(block, default if ratio is None else ratio)
        if keep < block.heads:
            out.append((block, keep))
    return out


def rewrite_shapes(block: HeadBlock, keep: int, names: NameAllocator) -> None:
    for entry in block.counts:
        set_entry(entry, keep, names)
    if block.width is not None:
        set_entry(block.width, keep * block.head_dim, names)
