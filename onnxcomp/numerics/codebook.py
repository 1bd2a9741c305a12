"""Codebook (non-uniform) quantization math: weighted 1-D k-means and GPTQ-style assignment.

Deep Compression (Han et al. 2016) shares weights through a k-means codebook: each
element stores a b-bit index into 2**b float values fitted to the tensor's distribution,
so dense regions get fine steps and the tails few. Here the k-means is weighted by the
importance of each element (the diagonal of H = X^T X of the layer input, the output
error a unit change of the weight causes) and, with calibration data, indices are chosen
column by column with the error pushed onto later columns as GPTQ does, so the layer's
output moves least rather than the weights.

Pruned zeros stay exact: a tensor that holds zeros reserves code 0 for 0.0 and fits the
other codes to its non-zero elements. Everything is deterministic (no random init).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcomp.numerics.obs import DEFAULT_DAMP, inverse_cholesky

ITERATIONS = 40
SWAPS = 64  # at most this many center moves after Lloyd (_swap)
MAX_POINTS = 1 << 20  # larger tensors are fitted on merged runs of sorted values


@dataclass
class Codebook:
    """A fitted tensor: ``values[codes] * scale`` (scale broadcast along ``axis``) is it."""

    values: np.ndarray  # float32 [k], ascending; values[0] == 0 when ``zero_code``
    codes: np.ndarray  # uint8, the tensor's shape
    scale: np.ndarray | None = None  # float32 per channel, or None (one codebook, no scale)
    axis: int | None = None
    zero_code: bool = False

    def decode(self) -> np.ndarray:
        out = self.values[self.codes.astype(np.int64)]
        if self.scale is not None and self.axis is not None:
            shape = [1] * out.ndim
            shape[self.axis] = -1
            out = out * self.scale.reshape(shape)
        return out.astype(np.float32)


def _prefix(xs: np.ndarray, ws: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Prefix sums of w, w*x and w*x*x over sorted ``xs`` (ws None: unit weights)."""
    if ws is None:
        cw = np.arange(xs.size + 1, dtype=np.float64)
        wx = xs
    else:
        cw = np.concatenate([[0.0], np.cumsum(ws)])
        wx = ws * xs
    cwx = np.concatenate([[0.0], np.cumsum(wx)])
    cwxx = np.concatenate([[0.0], np.cumsum(wx * xs)])
    return cw, cwx, cwxx


def _lloyd(
    xs: np.ndarray, sums: tuple[np.ndarray, ...], centers: np.ndarray
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd iterations on sorted ``xs`` via prefix sums: O(k log n) per step."""
    cw, cwx, cwxx = sums
    c = np.unique(centers)
    for _ in range(ITERATIONS):
        cuts = np.searchsorted(xs, (c[1:] + c[:-1]) / 2)
        lo = np.concatenate([[0], cuts])
        hi = np.concatenate([cuts, [xs.size]])
        mass = cw[hi] - cw[lo]
        new = np.where(mass > 0, (cwx[hi] - cwx[lo]) / np.maximum(mass, 1e-300), c)
        new = np.unique(new)
        if new.size == c.size and np.allclose(new, c, rtol=0, atol=1e-12):
            c = new
            break
        c = new
    cuts = np.searchsorted(xs, (c[1:] + c[:-1]) / 2)
    lo = np.concatenate([[0], cuts])
    hi = np.concatenate([cuts, [xs.size]])
    mass = cw[hi] - cw[lo]
    sx = cwx[hi] - cwx[lo]
    sse = float(np.sum((cwxx[hi] - cwxx[lo]) - 2 * c * sx + c * c * mass))
    return c, max(sse, 0.0)


def _blocks(xs: np.ndarray, ws: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Runs of neighbours in sorted order merged into one weighted point each (their
    weighted mean): k <= 256 centers over millions of values move by far less than a
    run's width, and the fit gets a few times cheaper on an embedding table."""
    per = -(-xs.size // MAX_POINTS)
    pad = (-xs.size) % per
    w = np.ones_like(xs) if ws is None else ws
    xs_p = np.concatenate([xs, np.full(pad, xs[-1])])
    w_p = np.concatenate([w, np.zeros(pad)])
    ones = np.ones(per)  # a matrix-vector product sums short rows far faster than sum()
    mass = w_p.reshape(-1, per) @ ones
    mean = (xs_p * w_p).reshape(-1, per) @ ones / np.maximum(mass, 1e-300)
    keep = mass > 0
    return np.maximum.accumulate(mean[keep]), mass[keep]  # sorted despite rounding


def fit_values(x: np.ndarray, k: int, importance: np.ndarray | None = None) -> np.ndarray:
    """Up to ``k`` ascending float64 centers minimising the weighted squared error.

    Two deterministic starts (evenly spaced over the range, as Deep Compression found
    best for large weights, and weighted quantiles) and the better result is kept.
    """
    x = np.asarray(x, np.float64).ravel()
    if x.size == 0:
        return np.zeros(1)
    if importance is None:  # unit weights: sort the values alone (the embedding tables)
        xs, ws = np.sort(x), None
    else:
        w = np.asarray(importance, np.float64).ravel()
        w = np.where(w > 0, w, 0.0) + 1e-12 * (float(w.max()) if w.size else 1.0)
        order = np.argsort(x, kind="stable")
        xs, ws = x[order], w[order]
    distinct = 1 + int(np.count_nonzero(xs[1:] != xs[:-1]))
    if distinct <= k:
        return np.unique(xs)
    if xs.size > MAX_POINTS:
        xs, ws = _blocks(xs, ws)
    sums = _prefix(xs, ws)
    linear = np.linspace(xs[0], xs[-1], k)
    cum = sums[0][1:]
    quant = xs[np.searchsorted(cum, (np.arange(k) + 0.5) / k * cum[-1]).clip(0, xs.size - 1)]
    best, best_sse = _lloyd(xs, sums, linear)
    other, sse = _lloyd(xs, sums, quant)
    if sse < best_sse:
        best, best_sse = other, sse
    return _swap(xs, sums, best, best_sse)


def _cluster_sse(sums: tuple[np.ndarray, ...], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Weighted squared error of each run [lo, hi) of sorted values around its own mean."""
    cw, cwx, cwxx = sums
    mass = cw[hi] - cw[lo]
    sx = cwx[hi] - cwx[lo]
    return np.maximum((cwxx[hi] - cwxx[lo]) - sx * sx / np.maximum(mass, 1e-300), 0.0)


def _swap(xs: np.ndarray, sums: tuple[np.ndarray, ...], c: np.ndarray, sse: float) -> np.ndarray:
    """Move centers from where two neighbours can share one to where one cluster needs two.

    Lloyd only moves centers locally: a lone outlier far from the rest ends up sharing a
    center with the tail (a quantile start) or many centers sit in empty range (an even
    start), and either costs far more error than the codebook's size suggests. Each swap
    merges the cheapest neighbouring pair and splits the cluster whose split gains most,
    then Lloyd settles; kept while the error drops."""
    cw, cwx, _ = sums
    for _ in range(SWAPS):
        if c.size < 3:
            break
        cuts = np.searchsorted(xs, (c[1:] + c[:-1]) / 2)
        lo, hi = np.concatenate([[0], cuts]), np.concatenate([cuts, [xs.size]])
        own = _cluster_sse(sums, lo, hi)
        merge = _cluster_sse(sums, lo[:-1], hi[1:]) - own[:-1] - own[1:]
        mean = (cwx[hi] - cwx[lo]) / np.maximum(cw[hi] - cw[lo], 1e-300)
        mid = np.clip(np.searchsorted(xs, mean), lo, hi)
        gain = own - _cluster_sse(sums, lo, mid) - _cluster_sse(sums, mid, hi)
        j = int(np.argmax(gain))
        pairs = [i for i in np.argsort(merge, kind="stable") if i != j and i + 1 != j]
        if not pairs or gain[j] <= merge[pairs[0]]:
            break
        i = int(pairs[0])
        halves = [
            (cwx[a] - cwx[b]) / max(cw[a] - cw[b], 1e-300)
            for a, b in ((mid[j], lo[j]), (hi[j], mid[j]))
        ]
        both = (cwx[hi[i + 1]] - cwx[lo[i]]) / max(cw[hi[i + 1]] - cw[lo[i]], 1e-300)
        rest = np.delete(c, [i, i + 1, j])
        trial, trial_sse = _lloyd(xs, sums, np.concatenate([rest, [both], halves]))
        if trial_sse >= sse * (1 - 1e-9) or trial.size < c.size:
            break
        c, sse = trial, trial_sse
    return c


def nearest(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the nearest of the ascending ``values`` for every element of ``x``."""
    mids = (values[1:] + values[:-1]) / 2
    return np.searchsorted(mids, x).astype(np.int64)


def fit_codebook(
    w: np.ndarray,
    bits: int,
    importance: np.ndarray | None = None,
    axis: int | None = None,
) -> Codebook:
    """A 2**bits codebook for ``w``; with ``axis``, values are first divided by each
    channel's RMS so one codebook serves channels of different magnitude."""
    w = np.asarray(w, np.float32)
    scale = None
    x = w.astype(np.float64)
    imp = None if importance is None else np.broadcast_to(importance, w.shape).astype(np.float64)
    if axis is not None:
        scale = channel_rms(w, axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        s = scale.astype(np.float64).reshape(shape)
        x = x / s
        imp = (np.ones(w.shape) if imp is None else imp) * s * s
    zero = bool(np.any(w == 0)) and np.count_nonzero(w == 0) * 100 >= w.size
    k = 1 << bits
    nz = x != 0 if zero else np.ones(x.shape, bool)
    centers = fit_values(x[nz], k - 1 if zero else k, None if imp is None else imp[nz])
    values = np.concatenate([[0.0], centers[centers != 0]]) if zero else centers
    values = np.sort(values)
    codes = nearest(values, x)
    if zero:
        codes[w == 0] = int(np.searchsorted(values, 0.0))
    if scale is not None and axis is not None:
        # A dead channel (all zeros: a BN-folded gamma of 0) would decode to the code
        # nearest 0 times its unit 1, often larger than its live neighbours' weights.
        live = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).any(axis=1)
        scale = np.where(live, scale, 0.0).astype(np.float32)
    book = Codebook(values.astype(np.float32), codes.astype(np.uint8), scale, axis, zero)
    return _zero_first(book)


def _zero_first(book: Codebook) -> Codebook:
    """Reorder so 0.0 is code 0 (a pruned tensor's dominant code packs to zero bits)."""
    if not book.zero_code:
        return book
    z = int(np.searchsorted(book.values, 0.0))
    perm = np.array([z] + [i for i in range(book.values.size) if i != z])
    inverse = np.argsort(perm)
    book.values = book.values[perm]
    book.codes = inverse[book.codes].astype(np.uint8)
    return book


def channel_rms(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel RMS (1 where a channel is all zero): the codebook's unit per channel."""
    moved = np.moveaxis(np.asarray(w, np.float64), axis, 0).reshape(w.shape[axis], -1)
    rms = np.sqrt(np.mean(moved * moved, axis=1))
    return np.where(rms > 0, rms, 1.0).astype(np.float32)


def weighted_error(w: np.ndarray, book: Codebook, importance: np.ndarray | None) -> float:
    diff = (book.decode().astype(np.float64) - w) ** 2
    return float(np.sum(diff if importance is None else diff * importance))


def gptq_assign(
    mat: np.ndarray,
    h: np.ndarray,
    values: np.ndarray,
    row_scale: np.ndarray | None,
    keep_zero: np.ndarray | None,
    zero_code: int | None,
    damp: float = DEFAULT_DAMP,
) -> np.ndarray:
    """Codes for a [rows, K] matrix, column by column, later columns absorbing the error.

    ``values`` ascending (codebook in channel units when ``row_scale`` is given);
    ``keep_zero`` entries get ``zero_code`` (pruned weights stay pruned).
    """
    w = np.array(mat, np.float64)
    rows, cols = w.shape
    if not np.any(np.diag(h) > 0):
        s = 1.0 if row_scale is None else _unit(row_scale)[:, None]
        codes = nearest(values.astype(np.float64), w / s)
        if keep_zero is not None and zero_code is not None:
            codes[keep_zero] = zero_code
        return codes
    u = inverse_cholesky(h, damp)
    s = np.ones(rows) if row_scale is None else row_scale.astype(np.float64)
    unit = np.ones(rows) if row_scale is None else _unit(row_scale)
    vals = values.astype(np.float64)
    order = np.argsort(values, kind="stable")
    sorted_vals = vals[order]
    codes = np.zeros((rows, cols), np.int64)
    block = 128
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        err_block = np.zeros((rows, b1 - b0))
        for j in range(b0, b1):
            col = w[:, j]
            c = order[nearest(sorted_vals, col / unit)]
            if keep_zero is not None and zero_code is not None:
                c = np.where(keep_zero[:, j], zero_code, c)
            codes[:, j] = c
            q = vals[c] * s
            err = (col - q) / u[j, j]
            w[:, j + 1 : b1] -= np.outer(err, u[j, j + 1 : b1])
            err_block[:, j - b0] = err
        w[:, b1:] -= err_block @ u[b0:b1, b1:]
    return codes


def _unit(row_scale: np.ndarray) -> np.ndarray:
    """The scale rows are divided by: 1 for a dead row (scale 0, decodes to 0 whatever its code)."""
    s = row_scale.astype(np.float64)
    return np.where(s > 0, s, 1.0)


def refit_values(
    mats: list[np.ndarray],
    hs: list[np.ndarray],
    codes: list[np.ndarray],
    values: np.ndarray,
    row_scales: list[np.ndarray | None],
    fixed_zero: bool,
) -> np.ndarray:
    """Codebook values that minimise the layers' output error for fixed codes.

    The data-driven counterpart of Deep Compression's centroid fine-tuning: with codes
    fixed, sum_r ||(w_r - s_r C[a_r]) X||^2 is quadratic in the k values C, so one k x k
    solve gives the best ones. Code 0 stays 0.0 when ``fixed_zero`` (pruned weights).
    """
    k = values.size
    m = np.zeros((k, k))
    b = np.zeros(k)
    for mat, h, c, s in zip(mats, hs, codes, row_scales, strict=True):
        rows, cols = mat.shape
        sr = np.ones(rows) if s is None else s.astype(np.float64)
        for r0 in range(0, rows, 64):
            r1 = min(r0 + 64, rows)
            onehot = np.zeros((r1 - r0, cols, k))
            np.put_along_axis(onehot, c[r0:r1, :, None], 1.0, axis=2)
            ha = np.einsum("jl,rlc->rjc", h, onehot)
            w = np.asarray(mat[r0:r1], np.float64)
            sc = sr[r0:r1]
            m += np.einsum("r,rjc,rjd->cd", sc * sc, onehot, ha)
            b += np.einsum("r,rj,rjc->c", sc, w, ha)
    free = np.arange(1 if fixed_zero else 0, k)
    sub = m[np.ix_(free, free)]
    if sub.size == 0 or not np.all(np.isfinite(sub)):
        return values
    ridge = 1e-9 * max(float(np.trace(sub)) / free.size, 1e-30)
    try:
        sol = np.linalg.solve(sub + ridge * np.eye(free.size), b[free])
    except np.linalg.LinAlgError:
        return values
    out = values.astype(np.float64).copy()
    used = np.diag(sub) > 0
    out[free[used]] = sol[used]
    return out.astype(np.float32)
