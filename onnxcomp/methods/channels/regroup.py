"""Ops that regroup a traced tensor's channels rather than pass them through.

Flatten (or a Reshape to [batch, features]) turns each channel into a run of H*W
features: the consumer's rows are cut in runs, a literal feature count in the Reshape's
shape rewritten. Split along the channel axis hands each output a part of the input's
segments; its sizes are rewritten from the channels kept in each part, and every part
keeps at least one channel.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import const_array, folded_const, set_constant
from onnxcomp.methods.channels.channels import Group, Segments, coalesce, width


def single_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _carry(owner: dict, g: Group, out: ir.Value, axis: int, segs: Segments, per: int) -> None:
    g.values[out] = axis
    g.segments[out] = segs
    if per > 1:
        g.per[out] = per
    owner[out] = g


def flatten(owner: dict, node: ir.Node, g: Group, value: ir.Value, axis: int) -> None:
    """[N, C, *spatial] -> [N, C * prod(spatial)]: channel c becomes a run of features."""
    shape = value.shape
    op = node.op_type
    if shape is None or len(shape) + axis != 1 or value in g.per:
        return g.block(f"{op} {node.name}: channels not on axis 1 of a known rank")
    spatial = [d for d in list(shape)[2:] if isinstance(d, int)]
    if len(spatial) != len(shape) - 2:
        return g.block(f"{op} {node.name}: spatial size not static")
    per = math.prod(spatial)
    segs = g.segments[value]
    if op == "Flatten":
        if node.attributes.get_int("axis", 1) != 1:
            return g.block(f"Flatten {node.name}: axis is not 1")
    else:
        why = _not_to_features(node, width(segs) * per, shape[0])
        if why:
            return g.block(f"Reshape {node.name}: {why}")
        target = folded_const(node.inputs[1])
        if target is not None and int(target[1]) != -1:
            g.reshapes.append((node, per, segs))
    _carry(owner, g, node.outputs[0], -1, segs, per)
    return None


def _not_to_features(node: ir.Node, features: int, batch: object) -> str | None:
    """Why this Reshape is not [N, C*H*W] with a constant shape we can rewrite."""
    target = folded_const(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None or target.ndim != 1 or len(target) != 2:
        return "shape is not a constant [batch, features]"
    if node.attributes.get_int("allowzero", 0):
        return "allowzero"
    first, second = int(target[0]), int(target[1])
    keeps_batch = first == 0 or (first == -1 and second != -1) or first == batch
    if second not in (-1, features) or not keeps_batch:
        return f"shape {target.tolist()} does not keep the batch and flatten the rest"
    if second == features and not single_use(node.inputs[1]):  # type: ignore[arg-type]
        return "its shape constant is shared (it would be rewritten)"
    return None


def part(segs: Segments, start: int, length: int) -> Segments:
    """The segments of positions [start, start + length) of a tensor carrying ``segs``."""
    out, position = [], 0
    for seg_start, seg_length in segs:
        lo, hi = max(start, position), min(start + length, position + seg_length)
        if lo < hi:
            out.append((seg_start + lo - position, hi - lo))
        position += seg_length
    return coalesce(tuple(out))


def split(owner: dict, node: ir.Node, g: Group, value: ir.Value, axis: int) -> None:
    """Split on the channel axis: each output carries its part of the input's segments."""
    shape = value.shape
    rank = len(shape) if shape is not None else None
    if rank is None or node.attributes.get_int("axis", 0) % rank != rank + axis:
        return g.block(f"Split {node.name} does not split the channel axis")
    if value in g.per:
        return g.block(f"Split {node.name}: channels span several features")
    segs = g.segments[value]
    sizes = _split_sizes(node, width(segs))
    if isinstance(sizes, str):
        return g.block(f"Split {node.name}: {sizes}")
    parts, start = [], 0
    for out, size in zip(node.outputs, sizes, strict=True):
        if out.is_graph_output():
            return g.block(f"tensor {out.name} is a graph output")
        parts.append(part(segs, start, size))
        start += size
    for out, segs_k in zip(node.outputs, parts, strict=True):
        _carry(owner, g, out, axis, segs_k, 1)
    g.splits.append((node, parts))
    g.must += parts
    return None


def slice_(owner: dict, node: ir.Node, g: Group, value: ir.Value, axis: int) -> None:
    """Slice: channels pass untouched when the channel axis is not sliced; a constant,
    step-1 range of it carries that part of the segments (its bounds rewritten)."""
    shape = value.shape
    rank = len(shape) if shape is not None else None
    starts, ends = (folded_const(node.inputs[i]) if len(node.inputs) > i else None for i in (1, 2))
    axes = folded_const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    steps = folded_const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else None
    if rank is None or starts is None or ends is None:
        return g.block(f"Slice {node.name}: bounds not constant or rank unknown")
    listed = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
    segs = g.segments[value]
    out = node.outputs[0]
    if rank + axis not in listed:
        _carry(owner, g, out, axis, segs, g.per.get(value, 1))
        return None
    k = listed.index(rank + axis)
    if value in g.per or (steps is not None and int(steps[k]) != 1):
        return g.block(f"Slice {node.name}: channel axis sliced with a step or in runs")
    if not (single_use(node.inputs[1]) and single_use(node.inputs[2])):  # type: ignore[arg-type]
        return g.block(f"Slice {node.name}: bounds shared (they would be rewritten)")
    n = width(segs)
    start, end = (min(max(int(b) + (n if int(b) < 0 else 0), 0), n) for b in (starts[k], ends[k]))
    if end <= start:
        return g.block(f"Slice {node.name}: empty channel range")
    part_segs = part(segs, start, end - start)
    _carry(owner, g, out, axis, part_segs, 1)
    g.slices.append((node, k, segs, start, end))
    g.must.append(part_segs)
    return None


def rewrite_slice(node: ir.Node, k: int, kept_positions: np.ndarray, start: int, end: int) -> None:
    """New bounds: the kept positions before ``start`` and before ``end``."""

    for index, bound in ((1, start), (2, end)):
        array = const_array(node.inputs[index]).copy()  # type: ignore[arg-type]
        array[k] = int(np.count_nonzero(kept_positions < bound))
        set_constant(node.inputs[index], array)  # type: ignore[arg-type]


def _split_sizes(node: ir.Node, total: int) -> list[int] | str:
    n = len(node.outputs)
    given = node.inputs[1] if len(node.inputs) > 1 else None
    if given is not None:
        sizes = folded_const(given)
        if sizes is None or not single_use(given):
            return "sizes are not a constant of its own"
        found = [int(s) for s in sizes]
    elif "split" in node.attributes:
        found = list(node.attributes.get_ints("split", []))
    else:  # equal parts, the last one smaller (opset 18's num_outputs)
        step = -(-total // n)
        found = [step] * (n - 1) + [total - step * (n - 1)]
    if len(found) != n or sum(found) != total or min(found) <= 0:
        return f"sizes {found} do not cover the {total} channels"
    return found


def rewrite_split(node: ir.Node, sizes: list[int], new_constant) -> None:
    """Explicit sizes after pruning (an input from opset 13, else the attribute)."""
    array = np.array(sizes, np.int64)
    given = node.inputs[1] if len(node.inputs) > 1 else None
    opset = node.graph.opset_imports.get("", 13) if node.graph is not None else 13
    if given is not None:
        set_constant(given, array)
    elif "split" in node.attributes or opset < 13:
        node.attributes["split"] = ir.AttrInt64s("split", sizes)
    else:
        if "num_outputs" in node.attributes:
            del node.attributes["num_outputs"]
        node.resize_inputs(2)
        node.replace_input_with(1, new_constant(array))
