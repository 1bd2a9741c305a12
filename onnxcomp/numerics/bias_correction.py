"""Bias correction: the mean output of each compressed layer moved back onto the teacher's.

Rounding or pruning weights shifts a layer's expected output per channel
(E[W_q x] - E[W x] = (W_q - W) E[x]). Subtracting that shift from the bias restores the
mean exactly on the calibration data; it costs nothing at inference. The shift is
E[student] - E[teacher], so the teacher's means are measured once for all layers.
"""

from __future__ import annotations

import numpy as np


class ChannelMean:
    """Running per-channel mean of a tensor along ``axis`` (the output-channel axis)."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.sum: np.ndarray | None = None
        self.count = 0

    def update(self, array: np.ndarray) -> None:
        a = np.asarray(array, np.float64)
        axis = self.axis % a.ndim
        others = tuple(i for i in range(a.ndim) if i != axis)
        part = a.sum(axis=others)
        self.sum = part if self.sum is None else self.sum + part
        self.count += a.size // a.shape[axis] if a.ndim else 1

    @property
    def mean(self) -> np.ndarray:
        if self.sum is None:
            raise ValueError("no data seen")
        return self.sum / max(self.count, 1)


def mean_shift(student: ChannelMean, teacher: ChannelMean) -> np.ndarray:
    """Per-channel E[student] - E[teacher] (what to subtract from the bias)."""
    return student.mean - teacher.mean


def corrected_bias(bias: np.ndarray | None, shift: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """bias - shift / beta, broadcast on the last axis (Gemm's C may be scalar or [M, N])."""
    base = np.zeros(shift.shape, np.float64) if bias is None else np.asarray(bias, np.float64)
    return (base - shift / beta).astype(np.float32)


def corrected_int_bias(q: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """An int32 bias (value = q * scale) moved by -shift, staying on its integer grid."""
    step = np.round(shift / np.asarray(scale, np.float64))
    limit = np.iinfo(np.int32)
    return np.clip(q.astype(np.int64) - step.astype(np.int64), limit.min, limit.max).astype(
        np.int32
    )
