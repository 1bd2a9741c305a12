"""The ONNX ops of MLPs and small CNNs as torch functions, over onnx_ir nodes.

Our own table rather than onnx2torch: the student must read the compressed forms
(DequantizeLinear on a weight, ``Cast(int8) * scale``, codebook ``Gather``) with the
tensors we substitute by name, and must fail on anything else with the op's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxcomp.errors import OnnxcompError

Op = Callable[[ir.Node, list[Any]], list[Any]]

_DTYPES = {
    ir.DataType.FLOAT: torch.float32, ir.DataType.FLOAT16: torch.float16,
    ir.DataType.DOUBLE: torch.float64, ir.DataType.INT64: torch.int64,
    ir.DataType.INT32: torch.int32, ir.DataType.INT8: torch.int8, ir.DataType.UINT8: torch.uint8,
    ir.DataType.BOOL: torch.bool,
}  # fmt: skip


def _ints(node: ir.Node, name: str, default: list[int] | None = None) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else list(default or [])


def _int(node: ir.Node, name: str, default: int) -> int:
    return node.attributes.get_int(name, default)


def _float(node: ir.Node, name: str, default: float) -> float:
    return node.attributes.get_float(name, default)


def _gemm(node: ir.Node, x: list[Any]) -> list[Any]:
    a, b = x[0], x[1]
    if _int(node, "transA", 0):
        a = a.transpose(0, 1)
    if _int(node, "transB", 0):
        b = b.transpose(0, 1)
    y = _float(node, "alpha", 1.0) * (a @ b)
    if len(x) > 2 and x[2] is not None:
        y = y + _float(node, "beta", 1.0) * x[2]
    return [y]


def _pads(node: ir.Node, dims: int) -> list[int]:
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise OnnxcompError(f"distill: {node.op_type} auto_pad SAME_* is not supported")
    pads = _ints(node, "pads", [0] * (2 * dims))
    if pads[:dims] != pads[dims:]:
        raise OnnxcompError(f"distill: {node.op_type} with asymmetric pads is not supported")
    return pads[:dims]


def _conv(node: ir.Node, x: list[Any]) -> list[Any]:
    w = x[1]
    dims = w.dim() - 2
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    bias = x[2] if len(x) > 2 else None
    return [
        fn(
            x[0], w, bias, stride=_ints(node, "strides", [1] * dims), padding=_pads(node, dims),
            dilation=_ints(node, "dilations", [1] * dims), groups=_int(node, "group", 1),
        )
    ]  # fmt: skip


def _pool(node: ir.Node, x: list[Any]) -> list[Any]:
    kernel = _ints(node, "kernel_shape")
    dims = len(kernel)
    kwargs = {
        "kernel_size": kernel,
        "stride": _ints(node, "strides", [1] * dims),
        "padding": _pads(node, dims),
        "ceil_mode": bool(_int(node, "ceil_mode", 0)),
    }
    fn: Any
    if node.op_type == "MaxPool":
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
        return [fn(x[0], dilation=_ints(node, "dilations", [1] * dims), **kwargs)]
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    pad_counted = bool(_int(node, "count_include_pad", 0))
    return [fn(x[0], count_include_pad=pad_counted, **kwargs)]


def _reshape(node: ir.Node, x: list[Any]) -> list[Any]:
    shape = [int(d) for d in x[1].tolist()]
    if not _int(node, "allowzero", 0):
        shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x[0].reshape(shape)]


def _flatten(node: ir.Node, x: list[Any]) -> list[Any]:
    axis = _int(node, "axis", 1) % max(x[0].dim(), 1)
    return [x[0].reshape(int(torch.tensor(x[0].shape[:axis]).prod()), -1)]


def _clip(node: ir.Node, x: list[Any]) -> list[Any]:
    low = x[1] if len(x) > 1 and x[1] is not None else None
    high = x[2] if len(x) > 2 and x[2] is not None else None
    return [torch.clamp(x[0], low, high)]


def _batchnorm(node: ir.Node, x: list[Any]) -> list[Any]:
    eps = _float(node, "epsilon", 1e-5)
    return [F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=eps)]


def _dequantize(node: ir.Node, x: list[Any]) -> list[Any]:
    q, scale = x[0], x[1]
    zero = x[2] if len(x) > 2 and x[2] is not None else None
    q = q.to(torch.float32)
    if zero is not None:
        q = q - zero.to(torch.float32) if zero.dim() == 0 else q - _along(zero, q, node)
    return [q * (scale if scale.dim() == 0 or scale.dim() == q.dim() else _along(scale, q, node))]


def _along(v: Any, q: Any, node: ir.Node) -> Any:
    shape = [1] * q.dim()
    shape[_int(node, "axis", 1) % q.dim()] = v.numel()
    return v.to(torch.float32).reshape(shape)


def _cast(node: ir.Node, x: list[Any]) -> list[Any]:
    to = ir.DataType(_int(node, "to", 1))
    if to not in _DTYPES:
        raise OnnxcompError(f"distill: Cast to {to.name} is not supported")
    return [x[0].to(_DTYPES[to])]


def _constant(node: ir.Node, x: list[Any]) -> list[Any]:
    attr = node.attributes.get("value")
    if attr is None:
        raise OnnxcompError("distill: a Constant without a tensor value is not supported")
    return [torch.from_numpy(attr.as_tensor().numpy().copy())]


def _gather(node: ir.Node, x: list[Any]) -> list[Any]:
    table, index = x[0], x[1]
    axis = _int(node, "axis", 0) % table.dim()
    flat = torch.index_select(table, axis, index.reshape(-1).long())
    return [flat.reshape(*table.shape[:axis], *index.shape, *table.shape[axis + 1 :])]


def _softmax(node: ir.Node, x: list[Any]) -> list[Any]:
    return [torch.softmax(x[0], dim=_int(node, "axis", -1))]


OPS: dict[str, Op] = {
    "MatMul": lambda n, x: [x[0] @ x[1]],
    "Gemm": _gemm,
    "Conv": _conv,
    "Add": lambda n, x: [x[0] + x[1]],
    "Sub": lambda n, x: [x[0] - x[1]],
    "Mul": lambda n, x: [x[0] * x[1]],
    "Div": lambda n, x: [x[0] / x[1]],
    "Relu": lambda n, x: [torch.relu(x[0])],
    "Sigmoid": lambda n, x: [torch.sigmoid(x[0])],
    "Tanh": lambda n, x: [torch.tanh(x[0])],
    "Softmax": _softmax,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": lambda n, x: [x[0].permute(_ints(n, "perm", list(range(x[0].dim()))[::-1]))],
    "Concat": lambda n, x: [torch.cat(x, dim=_int(n, "axis", 0))],
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": lambda n, x: [x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)],
    "BatchNormalization": _batchnorm,
    "Clip": _clip,
    "Identity": lambda n, x: [x[0]],
    "Cast": _cast,
    "Gather": _gather,
    "DequantizeLinear": _dequantize,
    "Constant": _constant,
}  # fmt: skip


def unsupported(graph: ir.Graph) -> list[str]:
    """The op types of ``graph`` the table cannot run (sorted), empty when it can."""
    bad = set()
    for node in graph:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            bad.add(node.op_type if not node.domain else f"{node.domain}.{node.op_type}")
    return sorted(bad)


def run_graph(
    graph: ir.Graph, env: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Evaluate ``graph`` node by node; ``env`` holds the inputs and every initializer
    (by name), ``extra`` terms added to computed values (straight-through gradients).
    Returns ``env`` with every computed value added."""
    extra = extra or {}
    for node in graph:
        args = [env[v.name] if v is not None and v.name else None for v in node.inputs]
        outs = OPS[node.op_type](node, args)
        for value, out in zip(node.outputs, outs, strict=False):
            name = value.name or ""
            env[name] = out + extra[name] if name in extra else out
    return env
