"""The quantization ops of onnxcomp's int8/int4 outputs as torch functions, registered
into optable.OPS until the op table (another branch) carries them.

Activation rounding is simulated with straight-through gradients: the forward computes
the integers onnxruntime computes (half-to-even rounding, saturation), the backward
passes the gradient through inside the range and stops it where the value saturated.
Activation scales and zero points stay the calibrated ones (the values are inputs here,
not parameters): see student.py for why.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
import torch

from onnxcomp.methods.distill import optable

_RANGES = {
    ir.DataType.UINT8: (0, 255), ir.DataType.INT8: (-128, 127),
    ir.DataType.UINT4: (0, 15), ir.DataType.INT4: (-8, 7),
}  # fmt: skip


def _ste_round(x: Any, lo: float, hi: float) -> Any:
    """round(x) clamped to [lo, hi]; gradient 1 inside the range, 0 where it saturated."""
    xc = x.clamp(lo, hi)
    return torch.round(x).clamp(lo, hi).detach() + (xc - xc.detach())


def _axis_shape(v: Any, x: Any, node: ir.Node) -> Any:
    if v.dim() == 0 or v.numel() == 1:
        return v.reshape(())
    shape = [1] * x.dim()
    shape[node.attributes.get_int("axis", 1) % x.dim()] = v.numel()
    return v.reshape(shape)


def _blocks(v: Any, x: Any, node: ir.Node) -> Any:
    """A block-wise parameter [.., blocks, ..] repeated over its block along ``axis``."""
    axis = node.attributes.get_int("axis", 1) % x.dim()
    size = node.attributes.get_int("block_size", 0)
    return torch.repeat_interleave(v, size, dim=axis).narrow(axis, 0, x.shape[axis])


def _param(v: Any, x: Any, node: ir.Node) -> Any:
    if node.attributes.get_int("block_size", 0):
        return _blocks(v.to(torch.float32), x, node)
    return _axis_shape(v.to(torch.float32), x, node)


def _dequantize(node: ir.Node, x: list[Any]) -> list[Any]:
    q = x[0].to(torch.float32)
    zero = x[2] if len(x) > 2 and x[2] is not None else None
    if zero is not None:
        q = q - _param(zero, q, node)
    return [q * _param(x[1], q, node)]


def _quantize(node: ir.Node, x: list[Any]) -> list[Any]:
    """QuantizeLinear: integers held as float32 (the next DequantizeLinear reads them)."""
    zero = x[2] if len(x) > 2 and x[2] is not None else None
    out = node.outputs[0].dtype or ir.DataType.UINT8
    lo, hi = _RANGES.get(out, (0, 255))
    y = x[0] / _param(x[1], x[0], node)
    if zero is None:
        return [_ste_round(y, lo, hi)]
    z = _param(zero, x[0], node)
    return [_ste_round(y + z, lo, hi)]


def _dynamic_quantize(node: ir.Node, x: list[Any]) -> list[Any]:
    """DynamicQuantizeLinear (uint8): scale and zero point from the batch's range."""
    a = x[0]
    lo = torch.clamp(a.detach().min(), max=0.0)
    hi = torch.clamp(a.detach().max(), min=0.0)
    scale = (hi - lo) / 255.0
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.round((0 - lo) / scale).clamp(0, 255)
    return [_ste_round(a / scale + zero, 0, 255), scale, zero]


def _matmul_integer(node: ir.Node, x: list[Any]) -> list[Any]:
    a = x[0].to(torch.float32)
    b = x[1].to(torch.float32)
    if len(x) > 2 and x[2] is not None:
        a = a - x[2].to(torch.float32)
    if len(x) > 3 and x[3] is not None:
        b = b - x[3].to(torch.float32)
    return [a @ b]


def _gather_blocks(node: ir.Node, x: list[Any]) -> list[Any]:
    """com.microsoft GatherBlockQuantized (gather_axis 0, quantize_axis 1, symmetric):
    the rows of the int4 table times their block scales."""
    table, ids, scale = x[0].to(torch.float32), x[1].long(), x[2].to(torch.float32)
    size = node.attributes.get_int("block_size", 128)
    rows = torch.repeat_interleave(scale, size, dim=1).narrow(1, 0, table.shape[1])
    decoded = table * rows
    flat = torch.index_select(decoded, 0, ids.reshape(-1))
    return [flat.reshape(*ids.shape, table.shape[1])]


EXTRA: dict[str, optable.Op] = {
    "GatherBlockQuantized": _gather_blocks,
    "QuantizeLinear": _quantize,
    "DynamicQuantizeLinear": _dynamic_quantize,
    "MatMulInteger": _matmul_integer,
}
optable.OPS.update({k: v for k, v in EXTRA.items() if k not in optable.OPS})
optable.OPS["DequantizeLinear"] = _dequantize  # with block_size (int4) and zero points


CONTRIB = {"com.microsoft.GatherBlockQuantized"}  # onnxruntime's ops the table runs


def unsupported(graph: ir.Graph) -> list[str]:
    """optable.unsupported, less the onnxruntime contrib ops registered here."""
    return [op for op in optable.unsupported(graph) if op not in CONTRIB]
