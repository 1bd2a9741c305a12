"""GPTQ for block-wise 4-bit weights: each block's scale is fixed when the sweep reaches it.

numerics/gptq.py works with one scale per output channel known up front. With blocks of
K rows sharing a scale, the scale of a block is chosen from the weights *as updated*
by the error compensation of the blocks before it (Frantar et al.'s group-wise GPTQ),
then the block's rows are rounded one by one, each rounding error spread over the rows
not yet fixed through the upper Cholesky factor of H^-1 (numerics/obs.py). Columns go in
their natural order so a block is a contiguous run of K rows, which MatMulNBits needs.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.numerics.blocks import BlockQuant, quantize_blocks
from onnxcomp.numerics.obs import DEFAULT_DAMP, inverse_cholesky


def gptq_blocks(
    w: np.ndarray,
    h: np.ndarray,
    block_size: int,
    *,
    symmetric: bool = True,
    damp: float = DEFAULT_DAMP,
) -> BlockQuant:
    """4-bit codes for a MatMul weight ``w`` [K, N] given H = X^T X [K, K] of its input."""
    k, n = w.shape
    work = np.array(w, np.float64)  # rows of ``work`` are the K inputs
    if not np.any(np.diag(h) > 0):
        return quantize_blocks(w, block_size, symmetric=symmetric)
    u = inverse_cholesky(np.asarray(h, np.float64), damp)
    q = np.zeros((k, n), np.int8)
    blocks = -(-k // block_size)
    scale = np.zeros((blocks, n), np.float32)
    zero = None if symmetric else np.zeros((blocks, n), np.int8)
    lo, hi = (-8, 7) if symmetric else (0, 15)
    for b in range(blocks):
        i1, i2 = b * block_size, min((b + 1) * block_size, k)
        grid = quantize_blocks(work[i1:i2].astype(np.float32), block_size, symmetric=symmetric)
        s = grid.scale[0].astype(np.float64)
        z = None if grid.zero is None else grid.zero[0].astype(np.float64)
        scale[b] = grid.scale[0]
        if zero is not None and grid.zero is not None:
            zero[b] = grid.zero[0]
        err = np.zeros((i2 - i1, n))
        for i in range(i1, i2):
            row = work[i]
            codes = np.rint(row / s) + (z if z is not None else 0.0)
            codes = np.clip(codes, lo, hi)
            q[i] = codes.astype(np.int8)
            back = (codes - (z if z is not None else 0.0)) * s
            e = (row - back) / u[i, i]
            work[i:i2] -= np.outer(u[i, i:i2], e)
            err[i - i1] = e
        work[i2:] -= u[i1:i2, i2:].T @ err
    return BlockQuant(q, scale, zero, block_size)


def output_error(w: np.ndarray, quant: BlockQuant, h: np.ndarray) -> float:
    """||X (W - W_q)||^2 / ||X W||^2 from H = X^T X alone."""
    d = np.asarray(w, np.float64) - quant.dequantize().astype(np.float64)
    w64 = np.asarray(w, np.float64)
    num = float(np.einsum("ij,ik,kj->", d, h, d))
    den = float(np.einsum("ij,ik,kj->", w64, h, w64))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))
