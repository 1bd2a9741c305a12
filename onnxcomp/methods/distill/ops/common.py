"""What every op family shares: attribute readers, the refusal, dtypes, the op type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import ml_dtypes
import numpy as np
import onnx_ir as ir
import torch

from onnxcomp.errors import OnnxcompError

Fn = Callable[[list[Any]], list[Any]]
# A maker reads the node's attributes once and returns the function of its inputs;
# ``opset`` is the graph's version of the node's domain (attribute vs input forms).
Maker = Callable[[ir.Node, int], Fn]

DTYPES = {
    ir.DataType.FLOAT: torch.float32, ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16, ir.DataType.DOUBLE: torch.float64,
    ir.DataType.INT64: torch.int64, ir.DataType.INT32: torch.int32,
    ir.DataType.INT16: torch.int16, ir.DataType.INT8: torch.int8,
    ir.DataType.UINT8: torch.uint8, ir.DataType.BOOL: torch.bool,
    ir.DataType.UINT16: torch.int32, ir.DataType.UINT32: torch.int64,
    ir.DataType.UINT64: torch.int64,
}  # fmt: skip


def fail(node: ir.Node, what: str) -> NoReturn:
    """The refusal every op raises on a case it does not run (never a wrong value)."""
    name = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
    raise OnnxcompError(f"distill: {name} {what} is not supported (node '{node.name}')")


def ints(node: ir.Node, name: str, default: list[int] | None = None) -> list[int] | None:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else default


def int_(node: ir.Node, name: str, default: int) -> int:
    return node.attributes.get_int(name, default)


def float_(node: ir.Node, name: str, default: float) -> float:
    return node.attributes.get_float(name, default)


def string(node: ir.Node, name: str, default: str) -> str:
    return node.attributes.get_string(name, default)


def given(x: list[Any], i: int) -> Any:
    """Input ``i`` or None when absent (optional inputs may be omitted or empty)."""
    return x[i] if len(x) > i else None


def to_list(t: Any) -> list[int]:
    """An int64 shape-like tensor as Python ints."""
    return [int(v) for v in t.reshape(-1).tolist()]


def tensor_of(array: np.ndarray) -> torch.Tensor:
    """A numpy array as a torch tensor, 4-bit and unsigned wide types widened exactly."""
    if array.dtype in (ml_dtypes.int4, ml_dtypes.uint4):
        return torch.from_numpy(array.astype(np.int8))
    if array.dtype == np.uint16:
        return torch.from_numpy(array.astype(np.int32))
    if array.dtype in (np.uint32, np.uint64):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(np.array(array))


def is_int(t: Any) -> bool:
    return not (t.is_floating_point() or t.is_complex())
