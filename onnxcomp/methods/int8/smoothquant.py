"""SmoothQuant-style migration of activation outliers into MatMul/Gemm weights (int8).

A transformer activation often has a few channels 10-100x larger than the rest; one
per-tensor int8 scale sized for them leaves the others a handful of levels. Dividing
channel k by ``s_k = max|x_k| ** alpha / max|w_k| ** (1 - alpha)`` (and the weight rows
by the inverse, exact in float: passes/channel_scale.py) evens the channels out, at the
cost of rougher weight rows. alpha is searched per activation on the calibration data:
each candidate's int8 output error (per-tensor activations over the calibration range,
per-channel symmetric weights, as quantize_activations places them) is measured on a
sample of the real activation rows; a group is smoothed only when the best alpha lowers
that error by MIN_GAIN against no smoothing at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.io.data import DataSource, input_specs
from onnxcomp.passes.channel_scale import ScaleGroup, apply_scale, scale_groups, weight_kn
from onnxcomp.passes.report import CompressReport

logger = logging.getLogger(__name__)

ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MIN_GAIN = 0.10
# Activation rows kept per group to measure the error on: the error is a mean over rows,
# so 512 evenly spread rows rank alphas as 4096 do (MiniLM-L6: same alphas) at 1/8 the cost.
MAX_ROWS = 512
CALIB_BATCH = 4  # samples per capture run: peak memory is one batch of every activation
# Fewer activation rows than this cannot tell an outlier channel from a row's noise: the
# per-channel maxima would be fitted to the sample (8 rows of a random MLP: smoothed, then
# 3% cosine lost on inputs outside them). Such a group is left alone.
MIN_ROWS = 32
# Weights a MatMul/Gemm group needs before smoothing may insert a Mul in front of it.
MIN_MUL_WEIGHTS = 128 * 128


class _Stats:
    """Per-channel min/max over every row, and an evenly thinned sample of rows."""

    def __init__(self, features: int) -> None:
        self.lo = np.full(features, np.inf, np.float32)
        self.hi = np.full(features, -np.inf, np.float32)
        self.rows: list[np.ndarray] = []
        self.kept = 0
        self.stride = 1
        self.seen = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).reshape(-1, self.lo.size)
        self.lo = np.minimum(self.lo, x.min(axis=0))
        self.hi = np.maximum(self.hi, x.max(axis=0))
        first = (-self.seen) % self.stride
        self.seen += x.shape[0]
        take = x[first :: self.stride]
        self.rows.append(take.copy())
        self.kept += take.shape[0]
        if self.kept > 2 * MAX_ROWS:  # thin to every other row: still evenly spread
            sample = np.concatenate(self.rows)[::2]
            self.rows, self.kept, self.stride = [sample], sample.shape[0], self.stride * 2

    @property
    def sample(self) -> np.ndarray:
        return np.concatenate(self.rows) if self.rows else np.zeros((0, self.lo.size), np.float32)


def _fake_uint8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def _fake_int8_columns(w: np.ndarray, qmax: int) -> np.ndarray:
    scale = np.abs(w).max(axis=0) / float(qmax)
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale), -qmax, qmax) * scale


def int8_error(
    stats: _Stats,
    ws: list[np.ndarray],
    s: np.ndarray,
    qmax: int = 127,
    refs: list[np.ndarray] | None = None,
) -> float:
    """Relative output error of int8 X/s times int8 diag(s) W, summed over the weights;
    ``refs``: the float products X @ W when the caller has them already."""
    x = stats.sample
    xs = _fake_uint8(x / s, float((stats.lo / s).min()), float((stats.hi / s).max()))
    total = 0.0
    for i, w in enumerate(ws):
        ref = refs[i] if refs is not None else x @ w
        den = float(np.sum(ref.astype(np.float64) ** 2))
        out = xs @ _fake_int8_columns(w * s[:, None], qmax)
        total += float(np.sum((out - ref).astype(np.float64) ** 2)) / den if den > 0 else 0.0
    return total


def smooth_scale(
    stats: _Stats, ws: list[np.ndarray], qmax: int = 127
) -> tuple[np.ndarray | None, float, float, float]:
    """(s or None, alpha, error unsmoothed, error smoothed); weights in [-qmax, qmax]."""
    amax_x = np.maximum(np.abs(stats.lo), np.abs(stats.hi))
    amax_w = np.max([np.abs(w).max(axis=1) for w in ws], axis=0)
    ok = (amax_x > 0) & (amax_w > 0) & np.isfinite(amax_x)
    if stats.sample.shape[0] < MIN_ROWS or not ok.any():
        return None, 0.0, 0.0, 0.0
    ones = np.ones_like(amax_x)
    refs = [stats.sample @ w for w in ws]
    base = int8_error(stats, ws, ones, qmax, refs)

    def scale(alpha: float) -> np.ndarray:
        s = np.ones_like(amax_x)
        s[ok] = amax_x[ok] ** alpha / amax_w[ok] ** (1 - alpha)
        return s / np.sqrt(s[ok].max() * s[ok].min())

    errors: dict[int, float] = {}

    def error(i: int) -> float:
        if i not in errors:
            errors[i] = int8_error(stats, ws, scale(ALPHAS[i]), qmax, refs)
        return errors[i]

    # The error is unimodal in alpha (too little evens nothing out, too much makes the
    # weight rows the outliers): a ternary search over the grid, ~6 trials instead of 10.
    lo, hi = 0, len(ALPHAS) - 1
    while hi - lo > 2:
        a, b = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if error(a) <= error(b):
            hi = b
        else:
            lo = a
    i = min(range(lo, hi + 1), key=error)
    best, best_alpha, best_s = errors[i], ALPHAS[i], scale(ALPHAS[i])
    if best > base * (1 - MIN_GAIN):
        return None, 0.0, base, base
    return best_s.astype(np.float32), best_alpha, base, best


def collect(model: ir.Model, groups: list[ScaleGroup], data: DataSource) -> dict[str, _Stats]:
    from onnxcomp.runtime import capture

    stats = {g.name: _Stats(weight_kn(g.weights[0]).shape[0]) for g in groups}
    for _, values in capture.stream(model, sorted(stats), data):
        for name, acc in stats.items():
            acc.update(values[name])
        del values
    return stats


def _in_main_graph(value: ir.Value, model: ir.Model) -> bool:
    """An If/Loop body's tensor is no output the calibration session can add."""
    producer = value.producer()
    owner = producer.graph if producer is not None else value.graph
    return owner is model.graph


class SmoothQuantPass(ir.passes.InPlacePass):
    """--smoothquant: smooth the activations MatMul/Gemm weights read, before calibration."""

    def __init__(
        self,
        calib: Callable[[], DataSource],
        include: Callable[[Weight], bool],
        report: CompressReport,
        weight_bits: int = 8,
        calib_method: str = "minmax",
    ) -> None:
        super().__init__()
        self.calib, self.include, self.report = calib, include, report
        self.qmax = (1 << (weight_bits - 1)) - 1
        self.calib_method = calib_method

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.calib_method != "minmax":
            # The error it decides by is that of min-max ranges; clipped ranges move the
            # outliers differently (a random transformer with --calib-method percentile:
            # smoothed, cosine 0.9994 against 0.9996 unsmoothed).
            self.report.notes.append(
                f"SmoothQuant: not applied with --calib-method {self.calib_method} (its "
                "error model is min-max ranges)"
            )
            return ir.passes.PassResult(model, modified=False)
        groups = scale_groups([w for w in find_weights(model) if self.include(w)])
        groups = [g for g in groups if g.x.name and _in_main_graph(g.x, model)]
        if not groups:
            return ir.passes.PassResult(model, modified=False)
        data = self.calib()
        if not any(s.fixed_batch is not None for s in input_specs(model)):
            data = data.batched(CALIB_BATCH)  # one batch of every smoothed activation at a time
        stats = collect(model, groups, data)
        names = NameAllocator(model)
        smoothed, before, after, unfoldable = [], 0.0, 0.0, 0
        for group in groups:
            ws = [weight_kn(w) for w in group.weights]
            s, alpha, base, err = smooth_scale(stats[group.name], ws, self.qmax)
            before, after = before + base, after + err
            if s is None:
                continue
            # Where 1/s cannot fold into the producer (LayerNorm, a constant Mul), a Mul
            # is inserted: a float op the original did not run, worth it only beside
            # MatMuls big enough to hide its fixed cost (scikit-learn's digits MLP, 64x128
            # weights, ran 1.07x slower than fp32 with one).
            big = sum(w.array.size for w in group.weights) >= MIN_MUL_WEIGHTS
            where = apply_scale(group, s, names, allow_mul=big)
            if where is None:
                after += base - err
                unfoldable += 1
                continue
            smoothed.append(group.name)
            logger.info("smoothquant %s: alpha %.1f, %.4g -> %.4g, %s", group.name, alpha,
                        base, err, where)  # fmt: skip
        if smoothed:
            self.report.notes.append(
                f"SmoothQuant on {len(smoothed)} of {len(groups)} MatMul/Gemm activations: "
                f"simulated int8 output error {before:.4g} -> {after:.4g} summed over layers"
                + (f"; {unfoldable} more would need an inserted Mul: left" if unfoldable else "")
            )
        else:
            self.report.notes.append(
                f"SmoothQuant: no activation of {len(groups)} gained >= {MIN_GAIN:.0%}; "
                "none smoothed"
            )
        return ir.passes.PassResult(model, modified=bool(smoothed))
