"""GPTQ: int weights chosen for the layer's output on real inputs, not for the weights.

Plain rounding minimises ||W - W_q||; GPTQ minimises ||W X - W_q X|| by letting later
columns absorb each column's rounding error. Scales are those of plain symmetric
quantization (max|w| / qmax per output channel, or one per tensor), so the result drops
into the same DequantizeLinear form as QuantizeWeightsPass's.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.numerics.obs import DEFAULT_BLOCK, DEFAULT_DAMP, sweep
from onnxcomp.numerics.scales import symmetric_scale


def qmax_for(bits: int) -> int:
    """Largest symmetric code: 127 for 8 bits, 7 for 4 bits."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    return (1 << (bits - 1)) - 1


def weight_scale(w: np.ndarray, *, bits: int = 8, per_channel: bool = True) -> np.ndarray:
    """Scales of plain symmetric rounding for a [rows, K] matrix (rows = output channels).

    The same scale quantization.numeric gives plain rounding at these bits (7: the
    saturation-safe int8 range).
    """
    return symmetric_scale(w, 0 if per_channel else None, qmax_for(bits))


def rtn_quantize(
    w: np.ndarray, *, bits: int = 8, per_channel: bool = True, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest baseline: (int codes, scale) for a [rows, K] matrix."""
    if scale is None:
        scale = weight_scale(w, bits=bits, per_channel=per_channel)
    qmax = qmax_for(bits)
    s = scale.reshape(-1, 1) if scale.ndim else scale
    q = np.clip(np.rint(w.astype(np.float32) / s), -qmax, qmax).astype(np.int8)
    return q, scale


def gptq_quantize(
    w: np.ndarray,
    h: np.ndarray,
    *,
    bits: int = 8,
    per_channel: bool = True,
    scale: np.ndarray | None = None,
    keep_zero: np.ndarray | None = None,
    block: int = DEFAULT_BLOCK,
    damp: float = DEFAULT_DAMP,
    act_order: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scale) for a [rows, K] weight given H = X^T X of its input.

    ``scale`` overrides the plain scales (one per tensor shared by several matrices).
    ``keep_zero`` marks entries that stay exactly zero (a pruned weight stays pruned).
    """
    w = np.asarray(w, np.float32)
    if scale is None:
        scale = weight_scale(w, bits=bits, per_channel=per_channel)
    scale = np.asarray(scale, np.float32)
    if not np.any(np.diag(h) > 0):
        # No signal reached the layer: nothing to compensate against, plain rounding.
        q, scale = rtn_quantize(w, bits=bits, per_channel=per_channel, scale=scale)
        if keep_zero is not None:
            q[keep_zero] = 0
        return q, scale
    new, _ = sweep(
        w,
        h,
        scale=scale.astype(np.float64),
        qmax=qmax_for(bits),
        keep_zero=keep_zero,
        block=block,
        damp=damp,
        act_order=act_order,
    )
    s = scale.astype(np.float64).reshape(-1, 1) if scale.ndim else float(scale)
    q = np.rint(new / s).astype(np.int8)
    return q, scale
