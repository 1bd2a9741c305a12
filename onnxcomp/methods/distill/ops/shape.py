"""Shape, layout, indexing, constant and type ops (integer tensors carry no gradient)."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxcomp.methods.distill.ops.common import (
    DTYPES,
    Fn,
    fail,
    float_,
    given,
    int_,
    ints,
    string,
    tensor_of,
    to_list,
)  # fmt: skip

INT64 = torch.int64


def _shape(node: ir.Node, opset: int) -> Fn:
    start, end = int_(node, "start", 0), node.attributes.get_int("end", None)
    return lambda x: [torch.tensor(list(x[0].shape)[start:end], dtype=INT64)]


def _size(node: ir.Node, opset: int) -> Fn:
    return lambda x: [torch.tensor(x[0].numel(), dtype=INT64)]


def _reshape(node: ir.Node, opset: int) -> Fn:
    allowzero = int_(node, "allowzero", 0)
    attr_shape = ints(node, "shape") if opset < 5 else None

    def run(x: list[Any]) -> list[Any]:
        shape = attr_shape if attr_shape is not None else to_list(x[1])
        if not allowzero:
            shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return [x[0].reshape(shape)]

    return run


def _flatten(node: ir.Node, opset: int) -> Fn:
    axis = int_(node, "axis", 1)

    def run(x: list[Any]) -> list[Any]:
        a = axis % (x[0].dim() + 1) if axis < 0 else axis
        lead = 1
        for d in x[0].shape[:a]:
            lead *= d
        return [x[0].reshape(lead, -1) if x[0].numel() else x[0].reshape(lead, 0)]

    return run


def _transpose(node: ir.Node, opset: int) -> Fn:
    perm = ints(node, "perm")
    return lambda x: [x[0].permute(perm if perm is not None else list(range(x[0].dim()))[::-1])]


def _concat(node: ir.Node, opset: int) -> Fn:
    axis = int_(node, "axis", 0)

    def run(x: list[Any]) -> list[Any]:
        parts = [t for t in x if t is not None]
        if not any(t.is_floating_point() for t in parts):
            return [torch.cat(parts, dim=axis)]
        dtype = next(t.dtype for t in parts if t.is_floating_point())
        return [torch.cat([t.to(dtype) for t in parts], dim=axis)]

    return run


def _axes(node: ir.Node, x: list[Any], opset: int, since: int) -> list[int] | None:
    """``axes`` as an attribute before opset ``since``, as input 1 from it."""
    if opset < since:
        return ints(node, "axes")
    t = given(x, 1)
    return to_list(t) if t is not None else None


def _squeeze(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        axes = _axes(node, x, opset, 13)
        t = x[0]
        if axes is None:
            return [t.squeeze()]
        dims = sorted({a % t.dim() for a in axes}, reverse=True)
        for d in dims:
            if t.shape[d] != 1:
                fail(node, f"axis {d} of size {t.shape[d]}")
            t = t.squeeze(d)
        return [t]

    return run


def _unsqueeze(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        axes = _axes(node, x, opset, 13) or []
        t = x[0]
        rank = t.dim() + len(axes)
        for d in sorted(a % rank for a in axes):
            t = t.unsqueeze(d)
        return [t]

    return run


def _slice(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        t = x[0]
        if opset < 10:
            starts, ends = ints(node, "starts") or [], ints(node, "ends") or []
            axes = ints(node, "axes") or list(range(len(starts)))
            steps = [1] * len(starts)
        else:
            starts, ends = to_list(x[1]), to_list(x[2])
            a, s = given(x, 3), given(x, 4)
            axes = to_list(a) if a is not None else list(range(len(starts)))
            steps = to_list(s) if s is not None else [1] * len(starts)
        index: list[Any] = [slice(None)] * t.dim()
        flips = []
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            axis %= t.dim()
            size = t.shape[axis]
            if step > 0:
                index[axis] = slice(*slice(start, end, step).indices(size))
            elif step < 0:  # torch has no negative steps: gather the indices
                r = range(*slice(start, end, step).indices(size))
                flips.append((axis, torch.tensor(list(r), dtype=INT64)))
            else:
                fail(node, "step 0")
        y = t[tuple(index)] if any(i != slice(None) for i in index) else t
        for axis, idx in flips:
            y = torch.index_select(y, axis, idx)
        return [y]

    return run


def _split(node: ir.Node, opset: int) -> Fn:
    axis = int_(node, "axis", 0)
    n_out = len(node.outputs)
    attr = ints(node, "split")
    num = node.attributes.get_int("num_outputs", None)

    def run(x: list[Any]) -> list[Any]:
        t = x[0]
        sizes = attr if opset < 13 else (to_list(x[1]) if given(x, 1) is not None else None)
        if sizes is None:
            size = t.shape[axis]
            parts = num or n_out
            chunk = -(-size // parts)
            sizes = [min(chunk, size - i * chunk) for i in range(parts)]
        return list(torch.split(t, sizes, dim=axis))

    return run


def _expand(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        shape = torch.broadcast_shapes(tuple(x[0].shape), tuple(to_list(x[1])))
        return [x[0].expand(shape)]

    return run


def _tile(node: ir.Node, opset: int) -> Fn:
    return lambda x: [x[0].repeat(to_list(x[1]))]


def _constant_of_shape(node: ir.Node, opset: int) -> Fn:
    attr = node.attributes.get("value")
    fill = tensor_of(attr.as_tensor().numpy()) if attr is not None else torch.zeros(1)
    return lambda x: [fill.reshape(()).expand(to_list(x[0])).clone()]


def _range(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        start, limit, delta = (t.detach() for t in x[:3])
        if start.is_floating_point():
            return [torch.arange(float(start), float(limit), float(delta), dtype=start.dtype)]
        return [torch.arange(int(start), int(limit), int(delta), dtype=start.dtype)]

    return run


def _gather(node: ir.Node, opset: int) -> Fn:
    axis = int_(node, "axis", 0)

    def run(x: list[Any]) -> list[Any]:
        table, index = x[0], x[1].long()
        a = axis % table.dim()
        index = torch.where(index < 0, index + table.shape[a], index)
        flat = torch.index_select(table, a, index.reshape(-1))
        return [flat.reshape((*table.shape[:a], *index.shape, *table.shape[a + 1 :]))]

    return run


def _gather_elements(node: ir.Node, opset: int) -> Fn:
    axis = int_(node, "axis", 0)

    def run(x: list[Any]) -> list[Any]:
        index = x[1].long()
        index = torch.where(index < 0, index + x[0].shape[axis], index)
        return [torch.gather(x[0], axis, index)]

    return run


def _scatter_elements(node: ir.Node, opset: int) -> Fn:
    axis = int_(node, "axis", 0)
    if string(node, "reduction", "none") != "none":
        fail(node, "reduction")

    def run(x: list[Any]) -> list[Any]:
        index = x[1].long()
        index = torch.where(index < 0, index + x[0].shape[axis], index)
        return [torch.scatter(x[0], axis, index, x[2].to(x[0].dtype))]

    return run


def _pad(node: ir.Node, opset: int) -> Fn:
    mode = string(node, "mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        fail(node, f"mode={mode}")
    attr_pads, attr_value = ints(node, "pads"), float_(node, "value", 0.0)

    def run(x: list[Any]) -> list[Any]:
        t = x[0]
        if opset < 11:
            pads, value = attr_pads or [], attr_value
        else:
            pads = to_list(x[1])
            v = given(x, 2)
            value = float(v) if v is not None and v.numel() else 0.0
        n = t.dim()
        axes_t = given(x, 3)
        axes = [a % n for a in to_list(axes_t)] if axes_t is not None else list(range(n))
        k = len(axes)
        full = [0] * (2 * n)
        for i, a in enumerate(axes):
            full[a], full[n + a] = pads[i], pads[k + i]
        # torch lists pads from the last axis; stop at the first padded axis from the front
        first = min((a for a in range(n) if full[a] or full[n + a]), default=n)
        torch_pads = []
        for a in range(n - 1, first - 1, -1):
            torch_pads += [full[a], full[n + a]]
        if not torch_pads:
            return [t]
        if mode == "constant":
            return [F.pad(t, torch_pads, value=value)]
        torch_mode = "reflect" if mode == "reflect" else "replicate"
        if n - first > 3:
            fail(node, f"mode={mode} over more than 3 axes")
        # torch pads the last 1-3 axes of a [N, C, ...] tensor: fold the leading axes
        lead = t.shape[:first]
        folded = t.reshape(1, -1, *t.shape[first:])
        y = F.pad(folded, torch_pads, mode=torch_mode)
        return [y.reshape(*lead, *y.shape[2:])]

    return run


def _cast(node: ir.Node, opset: int) -> Fn:
    to = ir.DataType(int_(node, "to", 1))
    if to not in DTYPES:
        fail(node, f"to {to.name}")
    dtype = DTYPES[to]
    return lambda x: [x[0].to(dtype)]


def _cast_like(node: ir.Node, opset: int) -> Fn:
    return lambda x: [x[0].to(x[1].dtype)]


def _constant(node: ir.Node, opset: int) -> Fn:
    attrs = node.attributes
    if "value" in attrs:
        value = tensor_of(attrs["value"].as_tensor().numpy())
    elif "value_float" in attrs:
        value = torch.tensor(attrs.get_float("value_float"), dtype=torch.float32)
    elif "value_floats" in attrs:
        value = torch.tensor(list(attrs["value_floats"].as_floats()), dtype=torch.float32)
    elif "value_int" in attrs:
        value = torch.tensor(attrs.get_int("value_int"), dtype=INT64)
    elif "value_ints" in attrs:
        value = torch.tensor(list(attrs["value_ints"].as_ints()), dtype=INT64)
    else:
        fail(node, f"attribute {sorted(attrs)}")
    return lambda x: [value]


def _identity(node: ir.Node, opset: int) -> Fn:
    return lambda x: [x[0]]


def _trilu(node: ir.Node, opset: int) -> Fn:
    upper = int_(node, "upper", 1)

    def run(x: list[Any]) -> list[Any]:
        k = int(x[1]) if given(x, 1) is not None else 0
        return [torch.triu(x[0], k) if upper else torch.tril(x[0], k)]

    return run


OPS = {
    "Shape": _shape,
    "Size": _size,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Concat": _concat,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Split": _split,
    "Expand": _expand,
    "Tile": _tile,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "ScatterElements": _scatter_elements,
    "Pad": _pad,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Constant": _constant,
    "Identity": _identity,
    "Trilu": _trilu,
}
