"""The arithmetic of int8: scales, zero points, rounding, saturation.

Rounding is half-to-even (``np.rint``), the same as onnxruntime's QuantizeLinear, so a
value quantized here and one quantized by the runtime land on the same integer.
"""

from __future__ import annotations

import numpy as np

# Symmetric weights use [-127, 127]: -128 would make the range lopsided and zero
# would no longer sit in the middle; onnxruntime's int8 GEMMs expect this too.
QMAX_SYMMETRIC = 127
# The smallest scale we emit: a zero or denormal scale makes DequantizeLinear useless.
MIN_SCALE = np.float32(1e-12)


# Big weights are worked through in blocks of leading-axis rows of about this many
# elements: the float temporaries of VGG-19's 400 MB matrix stay at 16 MB each, not 1.6 GB.
BLOCK = 1 << 22


def _row_blocks(array: np.ndarray) -> list[slice]:
    rows = array.shape[0]
    step = max(1, BLOCK // max(array.size // max(rows, 1), 1))
    return [slice(i, i + step) for i in range(0, rows, step)]


def _chunked(array: np.ndarray) -> bool:
    return array.ndim > 0 and array.size > BLOCK


def _abs_max(array: np.ndarray, axis: int | None) -> np.ndarray:
    others = None if axis is None else tuple(i for i in range(array.ndim) if i != axis)
    if not _chunked(array):
        a = np.abs(array.astype(np.float32, copy=False))
        if axis is None:
            return np.asarray(a.max() if a.size else 0.0, dtype=np.float32)
        return a.max(axis=others) if others else a
    parts = [np.abs(array[b]).max(axis=others) for b in _row_blocks(array)]
    if axis is None:
        return np.asarray(max(parts), dtype=np.float32)
    return np.concatenate(parts) if axis == 0 else np.maximum.reduce(parts)


def symmetric_scale(array: np.ndarray, axis: int | None, qmax: int = QMAX_SYMMETRIC) -> np.ndarray:
    """max|w| / qmax per channel along ``axis`` (or one for the tensor); never zero."""
    amax = _abs_max(array, axis)
    scale = amax.astype(np.float32) / np.float32(qmax)
    # An all-zero channel quantizes to zeros with any scale; 1.0 keeps it exact.
    return np.where(scale > MIN_SCALE, scale, np.float32(1.0)).astype(np.float32)


def _broadcast(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def quantize(
    array: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | int = 0,
    *,
    axis: int | None = None,
    qmin: int = -128,
    qmax: int = 127,
    dtype: type = np.int8,
) -> np.ndarray:
    s = _broadcast(np.asarray(scale, np.float32), array.ndim, axis)
    z = _broadcast(np.asarray(zero_point, np.int32), array.ndim, axis)
    if not _chunked(array):
        return _quantize(array, s, z, qmin, qmax, dtype)
    out: np.ndarray = np.empty(array.shape, dtype)
    for b in _row_blocks(array):
        out[b] = _quantize(array[b], _rows(s, b), _rows(z, b), qmin, qmax, dtype)
    return out


def _rows(param: np.ndarray, block: slice) -> np.ndarray:
    """The part of a broadcast parameter that goes with a block of leading-axis rows."""
    return param[block] if param.ndim and param.shape[0] > 1 else param


def _quantize(array, s, z, qmin: int, qmax: int, dtype: type) -> np.ndarray:
    # One float temporary, worked in place; asarray: a 0-d division yields a numpy scalar.
    q = np.asarray(np.divide(array, s, dtype=np.float32))
    np.rint(q, out=q)
    if np.any(z):
        q += z
    np.clip(q, qmin, qmax, out=q)
    return q.astype(dtype)


def dequantize(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | int = 0, *, axis: int | None = None
) -> np.ndarray:
    s = _broadcast(np.asarray(scale, np.float32), q.ndim, axis)
    z = _broadcast(np.asarray(zero_point, np.int32), q.ndim, axis)
    return ((q.astype(np.int32) - z) * s).astype(np.float32)


def max_rounding_error(array: np.ndarray, q: np.ndarray, scale: np.ndarray, axis: int | None):
    """max |dequantize(q) - array| of a symmetric weight, block by block."""
    if not q.size:
        return 0.0
    if not _chunked(array):
        return float(np.max(np.abs(dequantize(q, scale, axis=axis) - array)))
    s = _broadcast(np.asarray(scale, np.float32), q.ndim, axis)
    worst = 0.0
    for b in _row_blocks(array):
        back = (q[b].astype(np.int32) * _rows(s, b)).astype(np.float32)
        worst = max(worst, float(np.max(np.abs(back - array[b]))))
    return worst


def lattice_step(array: np.ndarray, qmax: int) -> float | None:
    """The step q when every value is an integer multiple of q within ``qmax`` steps (an
    arange, a mask, a one-hot): int8 with scale q stores them exactly, where the max/qmax
    scale would move 0..15 to 0, 0.94, 2.01, ... (and a detector's boxes with them)."""
    nonzero = np.abs(array[array != 0]).astype(np.float64)
    if nonzero.size == 0:
        return None
    q = float(nonzero.min())
    k = np.asarray(array, dtype=np.float64) / q
    if float(np.abs(k).max()) > qmax or not np.array_equal(k, np.round(k)):
        return None
    return q if np.float32(q) == q else None


def quantize_weight_symmetric(
    array: np.ndarray, axis: int | None, qmax: int = QMAX_SYMMETRIC
) -> tuple[np.ndarray, np.ndarray]:
    """int8 weight (codes in [-qmax, qmax]) and its float32 scale(s); zeros stay zero.
    Values on a lattice (YOLOv8's DFL Conv holds 0..15) keep it: stored exactly."""
    scale = symmetric_scale(array, axis, qmax)
    step = lattice_step(array, qmax)
    if step is not None:
        scale = np.full(np.shape(scale), step, dtype=np.float32)
    q = quantize(array, scale, 0, axis=axis, qmin=-qmax, qmax=qmax)
    return q, scale


def affine_params(
    rmin: float, rmax: float, *, signed: bool, symmetric: bool
) -> tuple[np.float32, int]:
    """Scale and zero point mapping [rmin, rmax] (widened to hold 0) onto 8 bits."""
    rmin = min(float(rmin), 0.0)
    rmax = max(float(rmax), 0.0)
    qmin, qmax = (-128, 127) if signed else (0, 255)
    if symmetric:
        bound = max(abs(rmin), abs(rmax))
        scale = bound / ((qmax - qmin) / 2.0)
        zero = 0 if signed else 128
    else:
        scale = (rmax - rmin) / float(qmax - qmin)
        zero = round(qmin - rmin / scale) if scale > 0 else 0
        zero = int(np.clip(zero, qmin, qmax))
    if not scale > float(MIN_SCALE):
        scale = 1.0
    return np.float32(scale), zero


def activation_params(rmin: float, rmax: float, dtype: str) -> tuple[np.float32, int]:
    """Per-tensor scale and zero point for an activation range, asymmetric.

    ``dtype`` is "uint8" or "int8". A range starting at 0 (a Relu output) gets the
    lowest code as zero point, which is what lets onnxruntime drop the Relu.
    """
    return affine_params(rmin, rmax, signed=dtype == "int8", symmetric=False)


def qrange(dtype: str) -> tuple[int, int]:
    return (-128, 127) if dtype == "int8" else (0, 255)


def quantize_bias(
    bias: np.ndarray, input_scale: np.float32, weight_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale = input scale x weight scale (what int8 GEMMs add in)."""
    scale = (np.float32(input_scale) * np.asarray(weight_scale, np.float32)).astype(np.float32)
    scale = np.where(scale > MIN_SCALE, scale, np.float32(1.0)).astype(np.float32)
    limit = np.iinfo(np.int32)
    q = np.clip(np.rint(bias.astype(np.float64) / scale), limit.min, limit.max).astype(np.int32)
    return q, scale
