"""The optimal-brain-surgeon column sweep shared by GPTQ and SparseGPT.

A layer computes W X (W: rows x K, X: K x samples). Fixing column j of W to a rounded or
zeroed value moves the output; the move that best compensates is spread over the
columns not yet fixed, weighted by the inverse Hessian H^-1 (H = X X^T). Processing the
columns in order with the upper Cholesky factor U of H^-1 (U^T U = H^-1) makes every
step a rank-1 update (Frantar et al., GPTQ 2022 / SparseGPT 2023). Pure numpy, float64.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DAMP = 0.01
DEFAULT_BLOCK = 128


def prepare_hessian(h: np.ndarray, damp: float = DEFAULT_DAMP) -> tuple[np.ndarray, np.ndarray]:
    """H made positive definite: dead inputs get an average diagonal, plus damp * mean(diag).

    Returns (H, dead) where ``dead`` marks inputs that were always zero on the data.
    Their weights cannot be judged from the data, so they are treated as an average
    input (never zeroed for free): rows and columns of H stay zero off the diagonal,
    which keeps such a column out of the error spreading.
    """
    h = np.array(h, dtype=np.float64, copy=True)
    diag = np.diag(h).copy()
    dead = diag <= 0
    live_mean = float(diag[~dead].mean()) if (~dead).any() else 1.0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    idx = np.arange(h.shape[0])
    h[idx[dead], idx[dead]] = live_mean
    h[idx, idx] += damp * float(np.mean(np.diag(h)))
    return h, dead


def inverse_cholesky(h: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Upper U with U^T U = (H + damping)^-1; more damping when H is near singular."""
    base, _ = prepare_hessian(h, damp)
    extra = 0.0
    mean_diag = float(np.mean(np.diag(base)))
    for _ in range(6):
        try:
            hd = base + extra * mean_diag * np.eye(base.shape[0])
            lower = np.linalg.cholesky(hd)
            lower_inv = np.linalg.inv(lower)
            hinv = lower_inv.T @ lower_inv
            return np.linalg.cholesky(hinv).T
        except np.linalg.LinAlgError:
            extra = max(extra * 10.0, damp * 10.0)
    raise np.linalg.LinAlgError("Hessian is not positive definite even with heavy damping")


def _block_counts(total: int, columns: int, starts: list[int], ends: list[int]) -> list[int]:
    """Split ``total`` pruned entries over column blocks by cumulative rounding (exact)."""
    return [
        round(total * e / columns) - round(total * s / columns)
        for s, e in zip(starts, ends, strict=True)
    ]


def sweep(
    w: np.ndarray,
    h: np.ndarray,
    *,
    scale: np.ndarray | float | None = None,
    qmax: int = 127,
    prune_count: int = 0,
    keep_zero: np.ndarray | None = None,
    block: int = DEFAULT_BLOCK,
    damp: float = DEFAULT_DAMP,
    act_order: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Fix every weight (rounded to ``scale`` grid and/or pruned) compensating through H.

    ``scale``: per-row (rows,) or one scalar; None keeps values in float (pruning only).
    ``prune_count``: how many entries to zero, chosen block by block by the saliency
    w^2 / [U]_jj^2. ``keep_zero``: entries that must end at zero (an earlier pruning).
    Returns (new W, pruned mask); with a scale, new W lies exactly on the grid.
    """
    w = np.array(w, dtype=np.float64, copy=True)
    rows, cols = w.shape
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(cols)
    inv_perm = np.argsort(perm)
    w = w[:, perm]
    u = inverse_cholesky(np.asarray(h, np.float64)[np.ix_(perm, perm)], damp)
    fixed = np.zeros((rows, cols), bool) if keep_zero is None else keep_zero[:, perm].copy()
    s = None if scale is None else np.asarray(scale, np.float64).reshape(-1, 1)
    if s is not None and s.size == 1:
        s = np.full((rows, 1), float(s.ravel()[0]))
    starts = list(range(0, cols, block))
    ends = [min(b + block, cols) for b in starts]
    counts = _block_counts(prune_count, cols, starts, ends)
    pruned = np.zeros((rows, cols), bool)
    for i1, i2, k in zip(starts, ends, counts, strict=True):
        w1 = w[:, i1:i2].copy()
        u1 = u[i1:i2, i1:i2]
        mask1 = fixed[:, i1:i2].copy()
        if k > 0:
            saliency = w1**2 / np.diag(u1)[None, :] ** 2
            saliency[mask1] = -1.0  # forced zeros first, and they count
            order = np.argsort(saliency.ravel(), kind="stable")[:k]
            mask1.ravel()[order] = True
        err1 = np.zeros_like(w1)
        for i in range(i2 - i1):
            col = w1[:, i]
            q = col if s is None else np.clip(np.rint(col / s[:, 0]), -qmax, qmax) * s[:, 0]
            q = np.where(mask1[:, i], 0.0, q)
            err = (col - q) / u1[i, i]
            w1[:, i:] -= np.outer(err, u1[i, i:])
            w1[:, i] = q  # exact, not q plus round-off
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
        pruned[:, i1:i2] = mask1
    return w[:, inv_perm], pruned[:, inv_perm]


def output_error(w: np.ndarray, w_new: np.ndarray, h: np.ndarray) -> float:
    """||W X - W' X||^2 / ||W X||^2 from H = X X^T alone (0 when W X is zero)."""
    h = np.asarray(h, np.float64)
    w = np.asarray(w, np.float64)
    d = w - np.asarray(w_new, np.float64)
    num = float(np.einsum("ij,jk,ik->", d, h, d))
    den = float(np.einsum("ij,jk,ik->", w, h, w))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))
