"""Activation-aware scales for int4 weights (AWQ-style), chosen on calibration data.

A weight row that meets a large activation channel matters more to the output than one
that meets a small one; 4-bit blocks round every row alike. Scaling row k by
``s_k = rms(x_k) ** alpha`` before rounding (and the activation by ``1 / s_k``, exact in
float: passes/channel_scale.py) spends the block's precision where the output feels it.
alpha is searched per activation (a group of weights reading it, e.g. Q/K/V share one)
on the output error measured with H = X^T X, the same statistic GPTQ uses; alpha = 0 is
no scaling, so a group is only scaled when it lowers that error by MIN_GAIN.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.numerics.blocks import quantize_blocks
from onnxcomp.passes.channel_scale import ScaleGroup, weight_kn

ALPHAS = tuple(a / 10 for a in range(11))
MIN_GAIN = 0.02  # relative error reduction a scale must bring to be kept


def group_error(ws: list[np.ndarray], h: np.ndarray, s: np.ndarray, block_size: int,
                symmetric: bool) -> float:  # fmt: skip
    """Sum over the weights of ||X (W - Q(diag(s) W) / s)||^2 / ||X W||^2, from H alone."""
    total = 0.0
    for w in ws:
        q = quantize_blocks(w * s[:, None], block_size, symmetric=symmetric, search=False)
        d = (w - q.dequantize() / s[:, None]).astype(np.float64)
        w64 = w.astype(np.float64)
        den = float(np.sum(w64 * (h @ w64)))
        total += float(np.sum(d * (h @ d))) / den if den > 0 else 0.0
    return total


def awq_scale(
    group: ScaleGroup, h: np.ndarray, block_size: int, symmetric: bool
) -> tuple[np.ndarray | None, float, float, float]:
    """(s or None, alpha, error before, error after) for one group."""
    ws = [weight_kn(w) for w in group.weights]
    rms = np.sqrt(np.maximum(np.diag(h), 0.0))
    if not np.all(np.isfinite(rms)) or rms.max() <= 0:
        return None, 0.0, 0.0, 0.0
    rms = np.maximum(rms, rms.max() * 1e-4)
    ones = np.ones_like(rms)
    base = group_error(ws, h, ones, block_size, symmetric)
    best, best_alpha, best_s = base, 0.0, ones
    for alpha in ALPHAS[1:]:
        s = rms**alpha
        s = s / np.sqrt(s.max() * s.min())  # centred: neither the weights nor X blow up
        err = group_error(ws, h, s, block_size, symmetric)
        if err < best:
            best, best_alpha, best_s = err, alpha, s
    if best > base * (1 - MIN_GAIN):
        return None, 0.0, base, base
    return best_s.astype(np.float32), best_alpha, base, best
