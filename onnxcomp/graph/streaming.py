"""Weights read a block at a time, and let go once used.

A weight in an external data file is read with plain file reads into one block buffer:
its pages go to the operating system's cache, not to this process, so a pass over a
model larger than half the machine's memory holds only what it writes. A weight already
in memory is walked by views. ``release`` unmaps an external weight a pass has finished
with (onnx_ir keeps a loaded external tensor mapped for as long as it lives).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError

BLOCK_ELEMENTS = 1 << 22  # 16 MB of float32 per block
_READABLE = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE}


def flat_blocks(tensor: ir.TensorProtocol, block: int | None = None) -> Iterator[np.ndarray]:
    """The tensor's elements in order, as 1-D arrays of at most ``block`` elements
    (default ``BLOCK_ELEMENTS``)."""
    block = block or BLOCK_ELEMENTS
    if _readable_from_file(tensor):
        assert isinstance(tensor, ir.ExternalTensor)
        yield from _file_blocks(tensor, block)
        return
    flat = tensor.numpy().reshape(-1)
    for start in range(0, flat.size, block):
        yield flat[start : start + block]


def _readable_from_file(tensor: ir.TensorProtocol) -> bool:
    return (
        isinstance(tensor, ir.ExternalTensor)
        and tensor.raw is None  # not mapped yet: mapping it would cost its pages
        and tensor.dtype in _READABLE
    )


def _file_blocks(tensor: ir.ExternalTensor, block: int) -> Iterator[np.ndarray]:
    dtype = np.dtype(tensor.dtype.numpy()).newbyteorder("<")
    left = tensor.size
    with open(tensor.path, "rb") as f:
        f.seek(tensor.offset or 0)
        while left:
            count = min(block, left)
            data = np.fromfile(f, dtype=dtype, count=count)
            if data.size != count:
                raise OnnxcompError(
                    f"{tensor.path}: external data of '{tensor.name}' ends early "
                    f"({tensor.size:,} elements expected)"
                )
            left -= count
            yield data


def release(tensor: ir.TensorProtocol | None) -> None:
    """Unmap an external tensor's file (a later read maps it again)."""
    if isinstance(tensor, ir.ExternalTensor):
        # An array still viewing the mapping keeps it: it goes when that array does.
        with contextlib.suppress(BufferError):
            tensor.release()
