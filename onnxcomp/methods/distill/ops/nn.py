"""Convolution, pooling, normalization and resizing ops."""

from __future__ import annotations

import math
from typing import Any

import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxcomp.methods.distill.ops.common import (
    Fn,
    fail,
    float_,
    given,
    int_,
    ints,
    string,
    to_list,
)  # fmt: skip

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class Window:
    """A node's kernel, strides, dilations and pads, the SAME pads found per input."""

    def __init__(self, node: ir.Node, dims: int, kernel: list[int]) -> None:
        self.node, self.dims, self.kernel = node, dims, kernel
        self.strides = ints(node, "strides") or [1] * dims
        self.dilations = ints(node, "dilations") or [1] * dims
        self.auto_pad = string(node, "auto_pad", "NOTSET")
        if self.auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            fail(node, f"auto_pad={self.auto_pad}")
        pads = ints(node, "pads") or [0] * (2 * dims)
        self.pads = [0] * (2 * dims) if self.auto_pad == "VALID" else pads

    def pads_for(self, spatial: tuple[int, ...]) -> list[int]:
        """ONNX pads [begin..., end...] for this input's spatial shape."""
        if not self.auto_pad.startswith("SAME"):
            return self.pads
        begin, end = [], []
        for size, k, s, d in zip(spatial, self.kernel, self.strides, self.dilations, strict=True):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if self.auto_pad == "SAME_UPPER" else large)
            end.append(large if self.auto_pad == "SAME_UPPER" else small)
        return begin + end

    def split(self, x: Any, value: float = 0.0) -> tuple[Any, list[int]]:
        """(x padded where the pads are asymmetric, the symmetric pads left to torch)."""
        pads = self.pads_for(tuple(x.shape[2:]))
        n = self.dims
        if pads[:n] == pads[n:]:
            return x, pads[:n]
        torch_pads: list[int] = []
        for i in reversed(range(n)):
            torch_pads += [pads[i], pads[n + i]]
        return F.pad(x, torch_pads, value=value), [0] * n


def _conv(node: ir.Node, opset: int) -> Fn:
    group = int_(node, "group", 1)
    cache: dict[int, Window] = {}

    def run(x: list[Any]) -> list[Any]:
        w = x[1]
        dims = w.dim() - 2
        win = cache.get(dims)
        if win is None:
            win = cache[dims] = Window(node, dims, ints(node, "kernel_shape") or list(w.shape[2:]))
        t, pads = win.split(x[0])
        fn = _CONV[dims]
        y = fn(t, w, given(x, 2), win.strides, pads, win.dilations, group)
        return [y]

    return run


def _conv_transpose(node: ir.Node, opset: int) -> Fn:
    group = int_(node, "group", 1)
    if ints(node, "output_shape") is not None:
        fail(node, "output_shape")
    if string(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        fail(node, "auto_pad SAME_*")

    def run(x: list[Any]) -> list[Any]:
        w = x[1]
        dims = w.dim() - 2
        strides = ints(node, "strides") or [1] * dims
        dil = ints(node, "dilations") or [1] * dims
        pads = ints(node, "pads") or [0] * (2 * dims)
        if string(node, "auto_pad", "NOTSET") == "VALID":
            pads = [0] * (2 * dims)
        out_pad = ints(node, "output_padding") or [0] * dims
        # torch crops the same padding both sides: pad 0, then crop each side itself
        y = _CONVT[dims](x[0], w, given(x, 2), strides, 0, out_pad, group, dil)
        if any(pads):
            crop = [slice(pads[i], y.shape[2 + i] - pads[dims + i]) for i in range(dims)]
            y = y[tuple([slice(None), slice(None), *crop])]
        return [y]

    return run


def _pool(node: ir.Node, opset: int) -> Fn:
    kernel = ints(node, "kernel_shape") or []
    dims = len(kernel)
    if dims not in _MAX:
        fail(node, f"kernel of {dims} dimensions")
    win = Window(node, dims, kernel)
    ceil = bool(int_(node, "ceil_mode", 0))
    if node.op_type == "MaxPool":
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            fail(node, "Indices output")
        if int_(node, "storage_order", 0):
            fail(node, "storage_order=1")

        def run_max(x: list[Any]) -> list[Any]:
            t, pads = win.split(x[0], float("-inf"))
            if any(2 * p > k for p, k in zip(pads, kernel, strict=True)):
                t, pads = (
                    F.pad(t, [p for p in reversed(pads) for _ in (0, 1)], value=float("-inf")),
                    [0] * dims,
                )
            return [_MAX[dims](t, kernel, win.strides, pads, win.dilations, ceil)]

        return run_max
    if ints(node, "dilations") and any(d != 1 for d in win.dilations):
        fail(node, "dilations")
    include = bool(int_(node, "count_include_pad", 0))

    def run_avg(x: list[Any]) -> list[Any]:
        pads = win.pads_for(tuple(x[0].shape[2:]))
        if pads[:dims] == pads[dims:] and all(
            2 * p <= k for p, k in zip(pads, kernel, strict=False)
        ):
            return [_AVG[dims](x[0], kernel, win.strides, pads[:dims], ceil, include)]
        if ceil:
            fail(node, "ceil_mode with asymmetric pads")
        # asymmetric pads: a sum over the zero-padded input over the count it holds
        torch_pads: list[int] = []
        for i in reversed(range(dims)):
            torch_pads += [pads[i], pads[dims + i]]
        t = F.pad(x[0], torch_pads)
        total = _AVG[dims](t, kernel, win.strides, 0, False, True)
        if include:
            return [total]
        ones = F.pad(torch.ones_like(x[0][:1, :1]), torch_pads)
        count = _AVG[dims](ones, kernel, win.strides, 0, False, True)
        return [total / count]

    return run_avg


def _global(kind: str) -> Any:
    def make(node: ir.Node, opset: int) -> Fn:
        def run(x: list[Any]) -> list[Any]:
            dims = tuple(range(2, x[0].dim()))
            if kind == "avg":
                return [x[0].mean(dim=dims, keepdim=True)]
            return [torch.amax(x[0], dim=dims, keepdim=True)]

        return run

    return make


def _batchnorm(node: ir.Node, opset: int) -> Fn:
    eps = float_(node, "epsilon", 1e-5)
    if int_(node, "training_mode", 0):
        fail(node, "training_mode=1")

    def run(x: list[Any]) -> list[Any]:
        t, scale, bias, mean, var = x[:5]
        if not (mean.requires_grad or var.requires_grad):
            return [F.batch_norm(t, mean, var, scale, bias, training=False, eps=eps)]
        shape = (1, -1) + (1,) * (t.dim() - 2)  # statistics that train: the formula itself
        inv = torch.rsqrt(var + eps) * scale
        return [t * inv.reshape(shape) + (bias - mean * inv).reshape(shape)]

    return run


def _dropout(node: ir.Node, opset: int) -> Fn:
    return lambda x: [x[0], torch.ones_like(x[0], dtype=torch.bool)][: len(node.outputs)]


def _resize_indices(
    node: ir.Node, size_in: int, size_out: int, scale: float, coord: str, nearest: str
) -> Any:
    """Nearest-neighbour source index per output position, by ONNX's formulas."""
    out = torch.arange(size_out, dtype=torch.float64)
    if coord == "asymmetric":
        src = out / scale
    elif coord == "half_pixel":
        src = (out + 0.5) / scale - 0.5
    elif coord == "pytorch_half_pixel":
        src = (out + 0.5) / scale - 0.5 if size_out > 1 else torch.zeros_like(out)
    elif coord == "align_corners":
        src = out * (size_in - 1) / (size_out - 1) if size_out > 1 else torch.zeros_like(out)
    elif coord == "half_pixel_symmetric":
        adj = size_out / (scale * size_in)
        center = size_in / 2
        src = center * (1 - adj) + (out + 0.5) / scale - 0.5
    else:
        fail(node, f"coordinate_transformation_mode={coord}")
    if nearest == "floor":
        idx = torch.floor(src)
    elif nearest == "ceil":
        idx = torch.ceil(src)
    elif nearest == "round_prefer_floor":
        idx = torch.where(src - torch.floor(src) == 0.5, torch.floor(src), torch.floor(src + 0.5))
    elif nearest == "round_prefer_ceil":
        idx = torch.floor(src + 0.5)
    else:
        fail(node, f"nearest_mode={nearest}")
    return idx.clamp(0, size_in - 1).long()


def _resize(node: ir.Node, opset: int) -> Fn:
    mode = string(node, "mode", "nearest")
    coord = string(
        node, "coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric"
    )
    nearest = string(node, "nearest_mode", "round_prefer_floor")
    if int_(node, "antialias", 0):
        fail(node, "antialias=1")
    if ints(node, "axes") is not None:
        fail(node, "axes")
    if string(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        fail(node, "keep_aspect_ratio_policy")
    if mode not in ("nearest", "linear"):
        fail(node, f"mode={mode}")
    if node.op_type == "Upsample" or opset < 11:
        coord = "asymmetric"
        nearest = "floor" if node.op_type == "Upsample" or opset < 11 else nearest
    linear_coords = {"half_pixel": False, "pytorch_half_pixel": False, "align_corners": True}
    if mode == "linear" and coord not in linear_coords:
        fail(node, f"mode=linear with coordinate_transformation_mode={coord}")

    def run(x: list[Any]) -> list[Any]:
        t = x[0]
        if node.op_type == "Upsample" or opset < 11:
            scales_t, sizes_t = x[1], None
        else:
            scales_t, sizes_t = given(x, 2), given(x, 3)
        spatial = t.dim() - 2
        if sizes_t is not None and sizes_t.numel():
            sizes = to_list(sizes_t)
            if sizes[:2] != list(t.shape[:2]):
                fail(node, "resizing the batch or channel axis")
            out = sizes[2:]
            scales = [o / i for o, i in zip(out, t.shape[2:], strict=True)]
        else:
            all_scales = [float(s) for s in scales_t.reshape(-1).tolist()]
            if all_scales[:2] != [1.0, 1.0]:
                fail(node, "resizing the batch or channel axis")
            scales = all_scales[2:]
            out = [math.floor(i * s) for i, s in zip(t.shape[2:], scales, strict=True)]
        if mode == "linear":
            if spatial not in (1, 2, 3):
                fail(node, f"linear over {spatial} axes")
            fn = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial]
            if coord == "pytorch_half_pixel" and any(o == 1 for o in out):
                fail(node, "pytorch_half_pixel to an axis of 1")
            if sizes_t is not None and sizes_t.numel():
                return [F.interpolate(t, size=out, mode=fn, align_corners=linear_coords[coord])]
            return [
                F.interpolate(
                    t, scale_factor=scales, mode=fn, align_corners=linear_coords[coord],
                    recompute_scale_factor=False,
                )
            ]  # fmt: skip
        y = t
        for axis in range(spatial):
            idx = _resize_indices(node, t.shape[2 + axis], out[axis], scales[axis], coord, nearest)
            y = torch.index_select(y, 2 + axis, idx)
        return [y]

    return run


OPS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global("avg"),
    "GlobalMaxPool": _global("max"),
    "BatchNormalization": _batchnorm,
    "Dropout": _dropout,
    "Resize": _resize,
    "Upsample": _resize,
}
