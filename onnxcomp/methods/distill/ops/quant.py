"""Quantization ops: QDQ, dynamic activations, integer kernels and 4-bit weight blocks.

Codes computed by the graph (QuantizeLinear, DynamicQuantizeLinear, the QLinear ops'
outputs) are float tensors holding integers, so gradients pass: the forward rounds half
to even and saturates exactly as onnxruntime does (x / scale in float32, nearbyint, then
the zero point, clamped to the type's range), the backward is straight through within
the range. Stored codes (initializers) keep their integer dtype and are read as floats.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxcomp.methods.distill.ops.common import Fn, fail, given, int_, ints
from onnxcomp.methods.distill.ops.nn import Window

RANGES = {
    ir.DataType.UINT8: (0, 255), ir.DataType.INT8: (-128, 127),
    ir.DataType.UINT16: (0, 65535), ir.DataType.INT16: (-32768, 32767),
    ir.DataType.UINT4: (0, 15), ir.DataType.INT4: (-8, 7),
}  # fmt: skip
F32 = torch.float32


def _range(node: ir.Node, zero_slot: int | None) -> tuple[int, int]:
    """The saturation range of the node's codes, by output_dtype, zero point or output."""
    dtype = None
    attr = node.attributes.get_int("output_dtype", 0)
    if attr:
        dtype = ir.DataType(attr)
    elif zero_slot is not None and len(node.inputs) > zero_slot and node.inputs[zero_slot]:
        dtype = node.inputs[zero_slot].dtype  # type: ignore[union-attr]
    elif node.outputs[0].dtype is not None:
        dtype = node.outputs[0].dtype
    else:
        dtype = ir.DataType.UINT8
    if dtype not in RANGES:
        fail(node, f"codes of type {dtype}")
    return RANGES[dtype]


def spread(v: Any, x: Any, axis: int, block: int) -> Any:
    """A scale or zero point broadcast against ``x``: per tensor, per axis or per block."""
    if v.dim() == 0 or (v.numel() == 1 and not block):
        return v.reshape(())
    axis %= x.dim()
    if block:
        v = torch.repeat_interleave(v, block, dim=axis)
        return v.narrow(axis, 0, x.shape[axis])
    shape = [1] * x.dim()
    shape[axis] = v.numel()
    return v.reshape(shape)


class _FakeRound(torch.autograd.Function):
    """The codes forward; backward passes the gradient where ``v + zero`` is inside
    [lo, hi] (clamp's own rule), keeping only that bool mask: a quarter of the float
    input clamp would keep, for every quantized activation of the graph."""

    @staticmethod
    def forward(ctx: Any, v: Any, zero: Any, lo: int, hi: int) -> Any:
        shifted = v + zero
        ctx.save_for_backward((shifted >= lo) & (shifted <= hi))
        return torch.clamp(torch.round(v) + zero, lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


def fake_round(v: Any, zero: Any, lo: int, hi: int) -> Any:
    """clamp(round_half_even(v) + zero) with a straight-through gradient inside the range
    (to ``v`` only: zero points are never trained)."""
    if not v.requires_grad:
        return torch.clamp(torch.round(v) + zero, lo, hi)
    assert not getattr(zero, "requires_grad", False), "a zero point with a gradient"
    return _FakeRound.apply(v, zero, lo, hi)


def _quantize(node: ir.Node, opset: int) -> Fn:
    lo, hi = _range(node, 2)
    axis, block = int_(node, "axis", 1), int_(node, "block_size", 0)

    def run(x: list[Any]) -> list[Any]:
        t, scale, zero = x[0], x[1], given(x, 2)
        s = spread(scale.to(t.dtype), t, axis, block)
        z = spread(zero.to(t.dtype), t, axis, block) if zero is not None else 0.0
        return [fake_round(t / s, z, lo, hi)]

    return run


def _dequantize(node: ir.Node, opset: int) -> Fn:
    axis, block = int_(node, "axis", 1), int_(node, "block_size", 0)

    def run(x: list[Any]) -> list[Any]:
        q, scale, zero = x[0], x[1], given(x, 2)
        dtype = scale.dtype if scale.is_floating_point() else F32
        q = q.to(dtype)
        if zero is not None:
            q = q - spread(zero.to(dtype), q, axis, block)
        return [q * spread(scale, q, axis, block)]

    return run


def _dynamic_quantize(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        t = x[0]
        low = torch.clamp(t.detach().min(), max=0.0)
        high = torch.clamp(t.detach().max(), min=0.0)
        scale = (high - low) / 255.0
        if float(scale) == 0.0:
            fail(node, "an all-zero input (scale 0)")
        zero = torch.round(torch.clamp(0.0 - low / scale, 0.0, 255.0))
        return [fake_round(t / scale, zero, 0, 255), scale, zero]

    return run


def _centered(q: Any, zero: Any, row_axis: bool) -> Any:
    """``q - zero`` as float: a per-row zero point (MatMulInteger's A) along the rows."""
    q = q.to(F32)
    if zero is None:
        return q
    z = zero.to(F32)
    if z.numel() > 1 and row_axis:
        z = z.reshape(-1, 1)
    return q - z


def _matmul_integer(node: ir.Node, opset: int) -> Fn:
    def run(x: list[Any]) -> list[Any]:
        a = _centered(x[0], given(x, 2), True)
        b = _centered(x[1], given(x, 3), False)
        return [torch.matmul(a, b)]

    return run


def _conv_window(node: ir.Node) -> tuple[int, Any]:
    return int_(node, "group", 1), {}


def _conv_integer(node: ir.Node, opset: int) -> Fn:
    group, cache = _conv_window(node)

    def run(x: list[Any]) -> list[Any]:
        xq = _centered(x[0], given(x, 2), False)
        w = x[1].to(F32)
        wz = given(x, 3)
        if wz is not None:
            w = w - spread(wz.to(F32), w, 0, 0)
        return [_conv_any(node, cache, group, xq, w, None)]

    return run


def _conv_any(node: ir.Node, cache: dict[int, Window], group: int, t: Any, w: Any, b: Any) -> Any:
    dims = w.dim() - 2
    win = cache.get(dims)
    if win is None:
        win = cache[dims] = Window(node, dims, ints(node, "kernel_shape") or list(w.shape[2:]))
    t, pads = win.split(t)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return fn(t, w, b, win.strides, pads, win.dilations, group)


def _requantize(acc: Any, multiplier: Any, zero: Any, lo: int, hi: int) -> Any:
    """onnxruntime's requantization: float(acc) * (in_scale * w_scale / out_scale)."""
    return fake_round(acc * multiplier, zero, lo, hi)


def _qlinear_matmul(node: ir.Node, opset: int) -> Fn:
    lo, hi = _range(node, 7)

    def run(x: list[Any]) -> list[Any]:
        a_q, a_s, a_z, b_q, b_s, b_z, y_s, y_z = x[:8]
        acc = torch.matmul(_centered(a_q, a_z, True), _centered(b_q, b_z, False))
        mult = a_s.to(F32) * b_s.to(F32) / y_s.to(F32)
        if mult.numel() > 1:
            mult = mult.reshape(-1)
        return [_requantize(acc, mult, y_z.to(F32) if y_z is not None else 0.0, lo, hi)]

    return run


def _qlinear_conv(node: ir.Node, opset: int) -> Fn:
    lo, hi = _range(node, 7)
    group, cache = _conv_window(node)

    def run(x: list[Any]) -> list[Any]:
        x_q, x_s, x_z, w_q, w_s, w_z, y_s = x[:7]
        y_z, bias = given(x, 7), given(x, 8)
        w = w_q.to(F32)
        if w_z is not None:
            w = w - spread(w_z.to(F32), w, 0, 0)
        acc = _conv_any(node, cache, group, _centered(x_q, x_z, False), w, None)
        if bias is not None:
            acc = acc + bias.to(F32).reshape(1, -1, *([1] * (acc.dim() - 2)))
        mult = x_s.to(F32) * w_s.to(F32) / y_s.to(F32)
        mult = spread(mult, acc, 1, 0)
        return [_requantize(acc, mult, y_z.to(F32) if y_z is not None else 0.0, lo, hi)]

    return run


def unpack_nibbles(packed: Any, count: int) -> Any:
    """uint8 bytes -> 4-bit codes along the last axis, low nibble first, ``count`` kept."""
    p = packed.to(torch.int16) & 0xFF
    codes = torch.stack([p & 0x0F, p >> 4], dim=-1).reshape(*packed.shape[:-1], -1)
    return codes[..., :count]


def decode_nbits(node: ir.Node, b: Any, scales: Any, zeros: Any, k: int, n: int, block: int) -> Any:
    """MatMulNBits' weight [N, K] as float from its packed codes (4 bits only)."""
    blocks = -(-k // block)
    codes = unpack_nibbles(b.reshape(n, blocks, -1), block).to(F32)  # [N, blocks, block]
    s = scales.to(F32).reshape(n, blocks, 1)
    if zeros is None:
        z: Any = 8.0
    elif zeros.is_floating_point():
        z = zeros.to(F32).reshape(n, blocks, 1)
    else:
        z = unpack_nibbles(zeros.reshape(n, -1), blocks).to(F32).reshape(n, blocks, 1)
    w = ((codes - z) * s).reshape(n, blocks * block)
    return w[:, :k]


def _matmul_nbits(node: ir.Node, opset: int) -> Fn:
    k, n = int_(node, "K", 0), int_(node, "N", 0)
    bits, block = int_(node, "bits", 4), int_(node, "block_size", 0)
    if bits != 4:
        fail(node, f"bits={bits}")
    if block < 16 or block & (block - 1):
        fail(node, f"block_size={block}")

    def run(x: list[Any]) -> list[Any]:
        a, b, scales, zeros = x[0], x[1], x[2], given(x, 3)
        if given(x, 4) is not None and x[4].numel():
            fail(node, "g_idx")
        w = decode_nbits(node, b, scales, zeros, k, n, block)
        y = torch.matmul(a, w.transpose(0, 1).to(a.dtype))
        bias = given(x, 5)
        return [y + bias if bias is not None else y]

    return run


def _gather_block(node: ir.Node, opset: int) -> Fn:
    gather_axis, quant_axis = int_(node, "gather_axis", 0), int_(node, "quantize_axis", 1)
    block = int_(node, "block_size", 128)
    dtype = node.inputs[0].dtype if node.inputs[0] is not None else None
    if dtype not in (ir.DataType.INT4, ir.DataType.UINT4):
        fail(node, f"data of type {dtype} (4-bit types only)")
    default_zero = 0.0 if dtype == ir.DataType.INT4 else 8.0

    def run(x: list[Any]) -> list[Any]:
        data, index, scales, zeros = x[0], x[1], x[2], given(x, 3)
        q = data.to(F32)
        s = spread(scales.to(F32), q, quant_axis, block)
        z = spread(zeros.to(F32), q, quant_axis, block) if zeros is not None else default_zero
        table = (q - z) * s
        a = gather_axis % table.dim()
        index = index.long()
        index = torch.where(index < 0, index + table.shape[a], index)
        flat = torch.index_select(table, a, index.reshape(-1))
        return [flat.reshape((*table.shape[:a], *index.shape, *table.shape[a + 1 :]))]

    return run


OPS = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "DynamicQuantizeLinear": _dynamic_quantize,
    "MatMulInteger": _matmul_integer,
    "ConvInteger": _conv_integer,
    "QLinearMatMul": _qlinear_matmul,
    "QLinearConv": _qlinear_conv,
}
MS_OPS = {"MatMulNBits": _matmul_nbits, "GatherBlockQuantized": _gather_block}
