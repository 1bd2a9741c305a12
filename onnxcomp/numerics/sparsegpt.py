"""SparseGPT: choose which weights to zero, and fix the rest, for the layer's output.

Magnitude pruning drops the smallest |w| and leaves the rest alone. SparseGPT drops
the entries whose removal costs least on real inputs (saliency w^2 / [H^-1]_jj) and
updates the kept ones to compensate, so W X barely moves at the same sparsity.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.numerics.obs import DEFAULT_BLOCK, DEFAULT_DAMP, sweep


def sparsegpt_prune(
    w: np.ndarray,
    h: np.ndarray,
    sparsity: float | None = None,
    *,
    count: int | None = None,
    block: int = DEFAULT_BLOCK,
    damp: float = DEFAULT_DAMP,
) -> np.ndarray:
    """A [rows, K] weight with ``count`` (or round(sparsity * size)) entries exactly zero."""
    w = np.asarray(w, np.float32)
    if count is None:
        if sparsity is None:
            raise ValueError("give a sparsity or a count")
        count = round(sparsity * w.size)
    if count <= 0:
        return w.copy()
    if not np.any(np.diag(h) > 0):
        # No data reached the layer: saliency degenerates to magnitude.
        h = np.eye(w.shape[1])
    # No act_order: pruning decisions are made block by block in input order.
    new, pruned = sweep(w, h, prune_count=count, block=block, damp=damp, act_order=False)
    out = new.astype(np.float32)
    out[pruned] = 0.0
    return out
