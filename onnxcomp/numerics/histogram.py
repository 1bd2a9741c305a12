"""Mergeable histograms for calibration, and the range each method reads from them.

Bins lie on a grid of width ``2**exp`` anchored at 0 (bin ``i`` covers ``[i*w, (i+1)*w)``).
When the data outgrows ``max_bins`` the width doubles and pairs of bins merge exactly,
so the width only depends on the overall range: updating batch after batch, merging
partial histograms, or counting everything at once give the same counts, bit for bit.
Memory is ``max_bins`` counters per tensor whatever the number of samples.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 2048
_MIN_EXP = -40  # width of a histogram of one repeated value
_MAX_INDEX_BITS = 60  # bin indices must stay exact in int64 and float


def _index_bound(rmin: float, rmax: float, exp: int) -> tuple[int, int]:
    return math.floor(math.ldexp(rmin, -exp)), math.floor(math.ldexp(rmax, -exp))


def fitting_exp(rmin: float, rmax: float, max_bins: int) -> int:
    """The smallest grid exponent whose bins cover [rmin, rmax] in ``max_bins`` bins.

    Monotone in the range, which is what makes merging exact.
    """
    amax = max(abs(rmin), abs(rmax))
    exp = _MIN_EXP
    if amax > 0:
        exp = max(exp, math.frexp(amax)[1] - _MAX_INDEX_BITS)
    span = rmax - rmin
    if span > 0:
        exp = max(exp, math.floor(math.log2(span / (max_bins + 1))) - 1)
    while True:
        lo, hi = _index_bound(rmin, rmax, exp)
        if hi - lo + 1 <= max_bins:
            return exp
        exp += 1


class Histogram:
    """Counts of finite values; ``min``/``max`` are exact, the bins hold the shape."""

    def __init__(self, max_bins: int = DEFAULT_BINS) -> None:
        if max_bins < 2:
            raise ValueError("a histogram needs at least 2 bins")
        self.max_bins = max_bins
        self.exp = _MIN_EXP
        self.offset = 0  # grid index of counts[0]
        self.counts = np.zeros(0, np.int64)
        self.min = math.inf
        self.max = -math.inf

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exp)

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes

    def edges(self) -> np.ndarray:
        """Bin edges, len(counts) + 1 of them."""
        idx = np.arange(self.offset, self.offset + len(self.counts) + 1, dtype=np.float64)
        return idx * self.width

    def update(self, array: np.ndarray) -> None:
        x = np.asarray(array)
        x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False).ravel()
        if not np.isfinite(x).all():
            x = x[np.isfinite(x)]
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self._grow(min(lo, self.min), max(hi, self.max))
        idx = np.floor(np.ldexp(x, -self.exp)).astype(np.int64) - self.offset
        self.counts += np.bincount(idx, minlength=len(self.counts))[: len(self.counts)]

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts (same max_bins); exact."""
        if other.max_bins != self.max_bins:
            raise ValueError("cannot merge histograms of different bin counts")
        if other.total == 0:
            return
        other = other.copy()
        lo, hi = min(self.min, other.min), max(self.max, other.max)
        self._grow(lo, hi)
        other._coarsen(self.exp)
        start = other.offset - self.offset
        self.counts[start : start + len(other.counts)] += other.counts

    def copy(self) -> Histogram:
        h = Histogram(self.max_bins)
        h.exp, h.offset, h.min, h.max = self.exp, self.offset, self.min, self.max
        h.counts = self.counts.copy()
        return h

    def _grow(self, lo: float, hi: float) -> None:
        """Make the bins cover [lo, hi]: coarsen if needed, then extend the ends."""
        exp = max(self.exp, fitting_exp(lo, hi, self.max_bins))
        if self.total == 0:
            self.counts = np.zeros(0, np.int64)
            self.exp = exp
            self.offset = _index_bound(lo, hi, exp)[0]
        else:
            self._coarsen(exp)
        first, last = _index_bound(lo, hi, self.exp)
        new_offset = min(first, self.offset)
        new_len = max(last, self.offset + len(self.counts) - 1) - new_offset + 1
        counts = np.zeros(new_len, np.int64)
        start = self.offset - new_offset
        counts[start : start + len(self.counts)] = self.counts
        self.counts, self.offset = counts, new_offset
        self.min, self.max = lo, hi

    def _coarsen(self, exp: int) -> None:
        if exp <= self.exp:
            return
        shift = exp - self.exp
        self.exp = exp
        if len(self.counts) == 0:
            return
        idx = np.arange(self.offset, self.offset + len(self.counts), dtype=np.int64) >> shift
        self.offset = int(idx[0])
        self.counts = np.bincount(idx - idx[0], weights=self.counts).astype(np.int64)

    def folded(self) -> tuple[np.ndarray, float]:
        """Histogram of |x| on the same grid (bins [k*w, (k+1)*w)), and the width."""
        idx = np.arange(self.offset, self.offset + len(self.counts), dtype=np.int64)
        absolute = np.where(idx < 0, -idx - 1, idx)
        return np.bincount(absolute, weights=self.counts).astype(np.int64), self.width


def percentile_range(hist: Histogram, percentile: float) -> tuple[float, float]:
    """Cut (100 - p)/2 % of the values off each end; never wider than min/max."""
    total = hist.total
    if total == 0:
        return 0.0, 0.0
    cut = (100.0 - percentile) / 200.0 * total
    cdf = np.cumsum(hist.counts)
    edges = hist.edges()
    left = int(np.searchsorted(cdf, cut, side="right"))
    right = int(np.searchsorted(cdf, total - cut, side="left"))
    lo = max(float(edges[min(left, len(edges) - 1)]), hist.min)
    hi = min(float(edges[min(right + 1, len(edges) - 1)]), hist.max)
    return min(lo, hist.max), max(hi, hist.min)


def _clip_to_data(hist: Histogram, threshold: float) -> tuple[float, float]:
    return max(hist.min, -threshold), min(hist.max, threshold)


def entropy_range(hist: Histogram, levels: int = 128, candidates: int = 96) -> tuple[float, float]:
    """Threshold |x| <= T minimizing KL(P || quantized P) over ``levels`` steps (TensorRT style).

    Non-negative data (a Relu output) gets all 256 codes of one side.
    """
    counts, width = hist.folded()
    if hist.min >= 0:
        levels = 2 * levels
    n = len(counts)
    if n <= levels or hist.total == 0:
        return hist.min, hist.max
    best, best_i = math.inf, n
    for i in np.unique(np.linspace(levels, n, candidates).astype(int)):
        kl = _kl_clipped(counts, int(i), levels)
        if kl < best:
            best, best_i = kl, int(i)
    return _clip_to_data(hist, best_i * width)


def _kl_clipped(counts: np.ndarray, i: int, levels: int) -> float:
    sliced = counts[:i].astype(np.float64)
    p = sliced.copy()
    p[-1] += counts[i:].sum()  # P keeps the clipped mass, Q is built without it
    nonzero = p > 0
    group = (np.arange(i) * levels) // i  # which quantized level each bin falls in
    sums = np.bincount(group, weights=sliced, minlength=levels)
    used = np.bincount(group, weights=nonzero, minlength=levels)
    q = np.where(nonzero, sums[group] / np.maximum(used[group], 1), 0.0)
    q = np.maximum(q, 1e-9)  # an outlier-only last bin must not make KL infinite
    p, q = p[nonzero] / p.sum(), q[nonzero] / q[nonzero].sum()
    return float(np.sum(p * np.log(p / q)))


def mse_range(hist: Histogram, qlevels: int = 255, steps: int = 100) -> tuple[float, float]:
    """Shrink [min, max] by the factor that minimizes the expected squared error."""
    if hist.total == 0:
        return 0.0, 0.0
    edges = hist.edges()
    centers = np.clip((edges[:-1] + edges[1:]) / 2, hist.min, hist.max)
    counts = hist.counts.astype(np.float64)
    lo0, hi0 = min(hist.min, 0.0), max(hist.max, 0.0)
    alphas = np.linspace(1.0 / steps, 1.0, steps)[:, None]
    lo, hi = lo0 * alphas, hi0 * alphas
    scale = np.maximum((hi - lo) / qlevels, 1e-30)
    clipped = np.clip(centers[None, :], lo, hi)
    err = (centers[None, :] - clipped) ** 2 + scale**2 / 12.0
    best = int(np.argmin((err * counts[None, :]).sum(axis=1)))
    return float(lo[best, 0]), float(hi[best, 0])
