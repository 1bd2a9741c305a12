"""A loaded model checked before any pass reads it: each way it can be malformed is one
line naming the tensor, input or node (exit 2), not an exception deep inside numpy.

- every tensor's data holds exactly what its dims declare (Python ints: 2^32 x 2^32
  cannot wrap), dims non-negative and bounded;
- external data of Constant nodes confined like initializers' (safe_io);
- declared input dims bounded (synthetic data is made from them);
- opsets no newer than onnx knows, domains onnx or onnxruntime implement (or the
  model's own functions define).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph.edit import all_graphs
from onnxcomp.io import safe_io

MAX_DIM = 2**31 - 1  # onnxruntime and numpy index far beyond; no real tensor needs more
MAX_ELEMENTS = 2**36  # 256 GiB of float32: a declared size past this is corrupt

_RUNTIME_DOMAINS = frozenset(
    {
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.experimental",
        "com.microsoft.mlfeaturizers",
        "com.ms.internal.nhwc",
        "ai.onnx.contrib",
        "org.pytorch.aten",
    }
)

# TensorProto field that holds the values when raw_data is empty, per data type.
_T = onnx.TensorProto
_FIELD: dict[int, str] = {
    _T.FLOAT: "float_data", _T.COMPLEX64: "float_data", _T.DOUBLE: "double_data",
    _T.COMPLEX128: "double_data", _T.INT64: "int64_data", _T.UINT32: "uint64_data",
    _T.UINT64: "uint64_data", _T.STRING: "string_data",
}  # fmt: skip
_PER_ELEMENT: dict[int, int] = {_T.COMPLEX64: 2, _T.COMPLEX128: 2}


def check_model(model: ir.Model, path: Path) -> None:
    """Raise OnnxcompError on the first malformed part of ``model`` (read from ``path``)."""
    _check_opsets(model, path)
    for value in model.graph.inputs:
        _check_dims(value.shape, f"{path}: input '{value.name}'", declared=True)
    for graph in all_graphs(model.graph):
        for value in graph.initializers.values():
            if value.const_value is not None:
                check_tensor(value.const_value, path, f"tensor '{value.name}'")
        for node in graph:
            for attr in node.attributes.values():
                if attr.type == ir.AttributeType.TENSOR:
                    tensors = [attr.value]
                elif attr.type == ir.AttributeType.TENSORS:
                    tensors = list(attr.value)
                else:
                    continue
                for t in tensors:
                    check_tensor(t, path, f"node '{node.name}' attribute '{attr.name}'")


def check_tensor(tensor: ir.TensorProtocol, path: Path, what: str) -> None:
    """Dims bounded and data length matching them; external data confined."""
    where = f"{path}: {what}"
    _check_dims(tensor.shape, where)
    try:
        dtype = tensor.dtype  # a number onnx does not define (99) fails right here
        if dtype != ir.DataType.STRING:
            dtype.bitwidth  # noqa: B018  (UNDEFINED or unknown: no size to check)
    except Exception:
        raise OnnxcompError(f"{where}: unknown data type") from None
    if isinstance(tensor, ir.ExternalTensor):
        safe_io.check_external_tensor(tensor, path, what=what)
    elif isinstance(tensor, ir.TensorProtoTensor):
        check_proto_data(tensor.raw, where)


def _check_dims(shape: ir.ShapeProtocol | None, where: str, declared: bool = False) -> None:
    if shape is None:
        return
    dims = [d for d in shape if isinstance(d, int)]
    for d in dims:
        if (d < 0 and not declared) or d > MAX_DIM:
            raise OnnxcompError(f"{where}: dim {d} out of range (0 to {MAX_DIM:,})")
    elements = math.prod(d for d in dims if d > 0)
    if elements > MAX_ELEMENTS:
        raise OnnxcompError(
            f"{where}: shape {list(shape)} declares {elements:,} elements "
            f"(at most {MAX_ELEMENTS:,})"
        )


def check_proto_data(proto: onnx.TensorProto, where: str) -> None:
    """The values stored in ``proto`` (raw bytes or a typed field) fill its dims exactly."""
    if proto.data_location == _T.EXTERNAL:
        return  # confined and measured by safe_io.check_external_tensor
    for d in proto.dims:
        if d < 0 or d > MAX_DIM:
            raise OnnxcompError(f"{where}: dim {d} out of range (0 to {MAX_DIM:,})")
    elements = math.prod(proto.dims)
    if elements > MAX_ELEMENTS:
        raise OnnxcompError(f"{where}: dims {list(proto.dims)} declare {elements:,} elements")
    dtype = proto.data_type
    if dtype == _T.UNDEFINED or dtype not in onnx.helper.get_all_tensor_dtypes():
        raise OnnxcompError(f"{where}: unknown data type {dtype}")
    if proto.HasField("raw_data"):
        if dtype == _T.STRING:
            raise OnnxcompError(f"{where}: a string tensor cannot hold raw_data")
        bits = ir.DataType(dtype).bitwidth
        expected = (elements * bits + 7) // 8
        got = len(proto.raw_data)
        if got != expected:
            raise OnnxcompError(
                f"{where}: {got:,} bytes of data for dims {list(proto.dims)} (needs {expected:,})"
            )
        return
    field = _FIELD.get(dtype, "int32_data")
    count = len(getattr(proto, field))
    needed = elements * _PER_ELEMENT.get(dtype, 1)
    if dtype in (_T.INT4, _T.UINT4) or ir.DataType(dtype).bitwidth == 4:
        needed = (elements + 1) // 2
    if count != needed and (count or elements):
        raise OnnxcompError(
            f"{where}: {count:,} values in {field} for dims {list(proto.dims)} (needs {needed:,})"
        )


def _check_opsets(model: ir.Model, path: Path) -> None:
    newest = onnx.defs.onnx_opset_version()
    for domain, version in model.opset_imports.items():
        if domain in ("", "ai.onnx") and not 1 <= version <= newest:
            raise OnnxcompError(
                f"{path}: opset {version} of the default domain is not supported (onnx knows "
                f"1 to {newest})"
            )
    known = _onnx_domains() | _RUNTIME_DOMAINS | {f.domain for f in model.functions.values()}
    for graph in all_graphs(model.graph):
        for node in graph:
            if node.domain not in known:
                raise OnnxcompError(
                    f"{path}: node '{node.name}' ({node.op_type}) is in domain '{node.domain}', "
                    "which neither onnx nor onnxruntime implements"
                )


@functools.cache
def _onnx_domains() -> frozenset[str]:
    return frozenset({"", "ai.onnx"} | {s.domain for s in onnx.defs.get_all_schemas_with_history()})
