"""The arithmetic of block-wise 4-bit weights: one scale (and zero point) per block of rows.

A [K, N] MatMul weight is cut along K into blocks of ``block_size`` rows; every (block,
column) pair gets its own scale, the layout onnxruntime's MatMulNBits reads
(DequantizeLinear axis 0, scales [ceil(K/bs), N]). Sixteen levels are too few for a
plain max|w| scale to be the best one: each block's scale is searched over a few
shrink factors (clipping the largest weights) for the least squared error, the
"clip search" of RTN quantizers. Rounding is half-to-even, as in numeric.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcomp.numerics.scales import MIN_SCALE

# Shrink factors tried for every block's range; 1.0 first so ties keep the plain scale.
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)
SIGNED = (-8, 7)
UNSIGNED = (0, 15)


@dataclass
class BlockQuant:
    """Codes [K, N] (int8 holding 4-bit values), scales [blocks, N], zero points or None."""

    q: np.ndarray
    scale: np.ndarray
    zero: np.ndarray | None
    block_size: int

    def dequantize(self) -> np.ndarray:
        return dequantize_blocks(self.q, self.scale, self.zero, self.block_size)


def n_blocks(k: int, block_size: int) -> int:
    return -(-k // block_size)


def _padded(w: np.ndarray, block_size: int) -> np.ndarray:
    """[K, N] -> [blocks, block_size, N], padding rows with zeros (they never set a range)."""
    k, n = w.shape
    blocks = n_blocks(k, block_size)
    pad = blocks * block_size - k
    if pad:
        w = np.concatenate([w, np.zeros((pad, n), w.dtype)])
    return w.reshape(blocks, block_size, n)


def expand(param: np.ndarray, k: int, block_size: int) -> np.ndarray:
    """[blocks, N] -> [K, N]: each block's parameter repeated over its rows."""
    return np.repeat(param, block_size, axis=0)[:k]


def dequantize_blocks(
    q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, block_size: int
) -> np.ndarray:
    k = q.shape[0]
    codes = q.astype(np.float32)
    if zero is not None:
        codes = codes - expand(zero, k, block_size).astype(np.float32)
    return (codes * expand(scale, k, block_size)).astype(np.float32)


def _codes(wb: np.ndarray, s: np.ndarray, z: np.ndarray | None, lo: int, hi: int) -> np.ndarray:
    q = np.rint(wb / s[:, None, :])
    if z is not None:
        q += z[:, None, :]
    return np.clip(q, lo, hi)


def _params(wb: np.ndarray, ratio: float, symmetric: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale (and zero point) of every block for a range shrunk by ``ratio``."""
    if symmetric:
        amax = np.abs(wb).max(axis=1) * ratio
        scale = amax / np.float32(7.0)  # codes clip to [-8, 7]: -8 serves clipped negatives
        zero = None
    else:
        lo = np.minimum(wb.min(axis=1), 0.0) * ratio
        hi = np.maximum(wb.max(axis=1), 0.0) * ratio
        scale = (hi - lo) / np.float32(15.0)
        zero = np.clip(np.rint(-lo / np.where(scale > MIN_SCALE, scale, 1.0)), 0, 15)
    scale = np.where(scale > MIN_SCALE, scale, np.float32(1.0)).astype(np.float32)
    return scale, zero


def quantize_blocks(
    w: np.ndarray, block_size: int, *, symmetric: bool = True, search: bool = True
) -> BlockQuant:
    """Round-to-nearest 4-bit codes of a [K, N] weight with searched block ranges.

    Symmetric: int4 codes in [-8, 7], no zero point. Asymmetric: uint4 codes in [0, 15]
    with a zero point per block (a block of only positive weights uses all 16 levels).
    """
    if w.ndim != 2:
        raise ValueError(f"block quantization needs a 2-D weight, got shape {w.shape}")
    k = w.shape[0]
    wb = _padded(np.asarray(w, np.float32), block_size)
    lo, hi = SIGNED if symmetric else UNSIGNED
    best_s, best_z = _params(wb, 1.0, symmetric)
    if search:
        best_err = _block_error(wb, best_s, best_z, lo, hi)
        for ratio in CLIP_RATIOS[1:]:
            s, z = _params(wb, ratio, symmetric)
            err = _block_error(wb, s, z, lo, hi)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_s = np.where(better, s, best_s)
            if z is not None and best_z is not None:
                best_z = np.where(better, z, best_z)
    q = _codes(wb, best_s, best_z, lo, hi).reshape(-1, w.shape[1])[:k].astype(np.int8)
    zero = None if best_z is None else best_z.astype(np.int8)
    return BlockQuant(q, best_s.astype(np.float32), zero, block_size)


def _block_error(
    wb: np.ndarray, s: np.ndarray, z: np.ndarray | None, lo: int, hi: int
) -> np.ndarray:
    q = _codes(wb, s, z, lo, hi)
    if z is not None:
        q -= z[:, None, :]
    return ((q * s[:, None, :] - wb) ** 2).sum(axis=1)


def max_block_error(w: np.ndarray, quant: BlockQuant) -> float:
    return float(np.max(np.abs(quant.dequantize() - w))) if w.size else 0.0
