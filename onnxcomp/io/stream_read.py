"""Read a model with embedded weights without a second copy of them.

Parsing a .onnx file builds the whole protobuf, weights included; turning its tensors
into arrays the passes can free one by one then needs a second copy, so loading a
419 MB model peaked at twice its size. Here the file is walked field by field: the main
graph's big initializers become placeholders in a small protobuf that onnx_ir parses,
and each one's bytes are read from the file straight into its own array.

Only the protobuf wire format's public rules are used (varint keys, length-delimited
fields). A tensor this reader does not take as-is (typed data fields, packed types, a
size that does not match its shape) goes through the normal parser with the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.io.stream_write import varint as _enc

_GRAPH_FIELD = 7  # ModelProto.graph
_INITIALIZER_FIELD = 5  # GraphProto.initializer
_RAW_DATA_FIELD = 9  # TensorProto.raw_data
_STUB = "onnxcomp-stream-read-stub"
READ_MIN_BYTES = 1 << 20  # raw data this big is read into its own array
# TensorProto data types whose raw_data is a little-endian numpy array
_NUMPY = {
    onnx.TensorProto.FLOAT: "<f4", onnx.TensorProto.UINT8: "u1", onnx.TensorProto.INT8: "i1",
    onnx.TensorProto.UINT16: "<u2", onnx.TensorProto.INT16: "<i2", onnx.TensorProto.INT32: "<i4",
    onnx.TensorProto.INT64: "<i8", onnx.TensorProto.FLOAT16: "<f2",
    onnx.TensorProto.DOUBLE: "<f8", onnx.TensorProto.UINT32: "<u4",
    onnx.TensorProto.UINT64: "<u8",
}  # fmt: skip


class WireError(ValueError):
    """The bytes are not a protobuf this reader can walk (the caller parses normally)."""


class _Raw:
    """Where one initializer's raw bytes sit in the file."""

    def __init__(self, offset: int, length: int, dtype: str, dims: tuple[int, ...]) -> None:
        self.offset, self.length, self.dtype, self.dims = offset, length, dtype, dims


def read_split(path: Path) -> tuple[onnx.ModelProto, dict[str, _Raw]]:
    """The model with its big main-graph initializers as placeholders, and where each
    one's bytes are."""
    raws: dict[str, _Raw] = {}
    with path.open("rb") as f:
        model = _rebuild(
            f, 0, path.stat().st_size, _GRAPH_FIELD, lambda s, e: _graph(f, s, e, raws)
        )
    return onnx.ModelProto.FromString(model), raws


def fill(model: ir.Model, path: Path, raws: dict[str, _Raw]) -> None:
    """Put each placeholder's array in, read from the file."""
    with path.open("rb") as f:
        for name, value in model.graph.initializers.items():
            raw = raws.get(name)
            stub = value.const_value
            if raw is None or not isinstance(stub, ir.ExternalTensor):
                continue
            f.seek(raw.offset)
            array = np.fromfile(
                f, dtype=raw.dtype, count=raw.length // np.dtype(raw.dtype).itemsize
            )
            array = array.reshape(raw.dims).astype(
                np.dtype(raw.dtype).newbyteorder("="), copy=False
            )
            value.const_value = ir.Tensor(
                array, dtype=stub.dtype, name=name, doc_string=stub.doc_string,
                metadata_props=dict(stub.metadata_props),
            )  # fmt: skip
    left = [n for n, v in model.graph.initializers.items() if _is_stub(v.const_value)]
    if left:
        raise WireError(f"no data read for {left[0]}")


def checkable(proto: onnx.ModelProto, raws: dict[str, _Raw]) -> onnx.ModelProto:
    """``proto`` (changed in place) with a one-element stand-in of the same type and rank
    for each placeholder, for onnx.checker: it wants data in every tensor, and the real
    data's size was already matched against the shape here."""
    for t in proto.graph.initializer:
        raw = raws.get(t.name)
        if raw is None:
            continue
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]
        del t.dims[:]
        t.dims.extend([1] * len(raw.dims))
        t.raw_data = bytes(np.dtype(raw.dtype).itemsize)
    return proto


def _is_stub(tensor) -> bool:
    return isinstance(tensor, ir.ExternalTensor) and str(tensor.location) == _STUB


def _graph(f: BinaryIO, start: int, end: int, raws: dict[str, _Raw]) -> bytes:
    return _rebuild(f, start, end, _INITIALIZER_FIELD, lambda s, e: _tensor(f, s, e, raws))


def _tensor(f: BinaryIO, start: int, end: int, raws: dict[str, _Raw]) -> bytes:
    """A TensorProto's bytes, or a placeholder for it when its raw data is read later."""
    found: list[tuple[int, int]] = []

    def note(s: int, e: int) -> bytes:
        found.append((s, e - s))
        return b""

    header = _rebuild(f, start, end, _RAW_DATA_FIELD, note, drop=True)
    raw = found[-1] if found else None
    proto = onnx.TensorProto.FromString(header)
    dtype = _NUMPY.get(proto.data_type)
    dims = tuple(int(d) for d in proto.dims)
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    keep = (
        raw is None
        or raw[1] < READ_MIN_BYTES
        or dtype is None
        or raw[1] != count * np.dtype(dtype).itemsize
        or not proto.name
        or proto.name in raws
    )
    if keep:
        return _read(f, start, end - start)
    assert raw is not None and dtype is not None
    raws[proto.name] = _Raw(raw[0], raw[1], dtype, dims)
    proto.data_location = onnx.TensorProto.EXTERNAL
    del proto.external_data[:]
    for k, v in (("location", _STUB), ("offset", "0"), ("length", str(raw[1]))):
        entry = proto.external_data.add()
        entry.key, entry.value = k, v
    return proto.SerializeToString()


def _rebuild(
    f: BinaryIO,
    start: int,
    end: int,
    field: int,
    replace: Callable[[int, int], bytes],
    *,
    drop: bool = False,
) -> bytes:
    """The message in ``f[start:end]`` with each length-delimited ``field`` replaced by
    what ``replace(value_start, value_end)`` gives (left out when ``drop``); every other
    field copied as it is."""
    out = bytearray()
    pos = start
    while pos < end:
        key, body = _varint(f, pos)
        if key == (field << 3) | 2:
            length, value = _varint(f, body)
            new = replace(value, value + length)
            if not drop:
                out += _enc(key) + _enc(len(new)) + new
            pos = value + length
        else:
            stop = _skip(f, key & 7, body)
            out += _read(f, pos, stop - pos)
            pos = stop
    if pos != end:
        raise WireError("a field runs past its message")
    return bytes(out)


def _read(f: BinaryIO, pos: int, n: int) -> bytes:
    f.seek(pos)
    data = f.read(n)
    if len(data) != n:
        raise WireError("truncated")
    return data


def _varint(f: BinaryIO, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    f.seek(pos)
    head = f.read(10)
    value = shift = 0
    for i, byte in enumerate(head):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise WireError("bad varint")


def _skip(f: BinaryIO, wire: int, pos: int) -> int:
    """The end of a field whose value starts at ``pos``."""
    if wire == 0:
        return _varint(f, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        length, start = _varint(f, pos)
        return start + length
    if wire == 5:
        return pos + 4
    raise WireError(f"wire type {wire}")
