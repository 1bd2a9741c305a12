"""Activation ranges from one streamed pass of onnxruntime over the calibration data.

The wanted tensors become extra outputs of a copy of the model; each batch's values
update running min/max (and, for percentile/entropy/mse, a mergeable histogram) and
are dropped. Memory is one batch's activations plus a fixed size per tensor, whatever
the number of samples; onnxruntime's calibrators keep every output of every sample.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.data import DataSource
from onnxcomp.errors import OnnxcompError
from onnxcomp.histogram import (
    DEFAULT_BINS,
    Histogram,
    entropy_range,
    mse_range,
    percentile_range,
)

METHODS = ("minmax", "percentile", "entropy", "mse")


@dataclass
class TensorStats:
    """Running statistics of one tensor; ``hist`` only when a method needs it."""

    min: float = math.inf
    max: float = -math.inf
    hist: Histogram | None = None

    def update(self, array: np.ndarray) -> None:
        if array.size == 0 or array.dtype.kind != "f":
            return
        lo, hi = float(array.min()), float(array.max())
        finite = array
        if not (math.isfinite(lo) and math.isfinite(hi)):  # rare: pay for the filter
            finite = array[np.isfinite(array)]
            if finite.size == 0:
                return
            lo, hi = float(finite.min()), float(finite.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if self.hist is not None:
            self.hist.update(finite)

    def merge(self, other: TensorStats) -> None:
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        if self.hist is not None and other.hist is not None:
            self.hist.merge(other.hist)

    @property
    def seen(self) -> bool:
        return self.min <= self.max

    @property
    def nbytes(self) -> int:
        return 16 + (self.hist.nbytes if self.hist is not None else 0)

    def range(self, method: str = "minmax", percentile: float = 99.99) -> tuple[float, float]:
        """The float range to quantize: [min, max], or what the method clips it to."""
        if not self.seen:
            return 0.0, 0.0
        if method == "minmax" or self.hist is None:
            return self.min, self.max
        if method == "percentile":
            return percentile_range(self.hist, percentile)
        if method == "entropy":
            return entropy_range(self.hist)
        if method == "mse":
            return mse_range(self.hist)
        raise OnnxcompError(f"unknown calibration method {method!r}")


@dataclass
class Statistics:
    """Statistics of every calibrated tensor; fixed size once created."""

    tensors: dict[str, TensorStats] = field(default_factory=dict)
    samples: int = 0
    batches: int = 0
    seconds: float = 0.0

    @classmethod
    def empty(cls, names: Iterable[str], *, histograms: bool, bins: int = DEFAULT_BINS):
        return cls({n: TensorStats(hist=Histogram(bins) if histograms else None) for n in names})

    def update(self, outputs: dict[str, np.ndarray], samples: int) -> None:
        for name, array in outputs.items():
            self.tensors[name].update(array)
        self.samples += samples
        self.batches += 1

    def merge(self, other: Statistics) -> None:
        for name, stats in other.tensors.items():
            if name in self.tensors:
                self.tensors[name].merge(stats)
            else:
                self.tensors[name] = stats
        self.samples += other.samples
        self.batches += other.batches

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.tensors.values())

    def ranges(self, method: str, percentile: float = 99.99) -> dict[str, tuple[float, float]]:
        return {n: s.range(method, percentile) for n, s in self.tensors.items() if s.seen}


class Progress:
    """``calibrating  120/500 samples  45.1/s`` on stderr, rewritten in place; TTY only."""

    def __init__(self, total: int | None, label: str = "calibrating", stream: IO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.label = total, label
        self.done, self.start, self._last = 0, time.perf_counter(), 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        bar = ""
        if self.total:
            filled = int(20 * min(self.done / self.total, 1.0))
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        return f"{self.label} {bar}{self.done}{of} samples  {self.done / elapsed:.1f}/s"

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()


def _session(model: ir.Model, names: list[str], threads: int | None):
    """An onnxruntime session over a copy of the model exposing ``names`` as outputs."""
    import onnxruntime as ort

    proto = ir.to_proto(model)
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
    blob = proto.SerializeToString()
    del proto
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


def collect(
    model: ir.Model,
    names: Iterable[str],
    data: DataSource,
    *,
    method: str = "minmax",
    bins: int = DEFAULT_BINS,
    threads: int | None = None,
    progress: bool = True,
    stream: IO | None = None,
) -> Statistics:
    """Run the model once over ``data`` and return statistics of the ``names`` tensors."""
    if method not in METHODS:
        raise OnnxcompError(f"--calib-method must be one of {', '.join(METHODS)}")
    names = list(dict.fromkeys(names))
    stats = Statistics.empty(names, histograms=method != "minmax", bins=bins)
    if not names:
        return stats
    start = time.perf_counter()
    session = _session(model, names, threads)
    wanted = {i.name for i in session.get_inputs()}
    bar = Progress(data.num_samples if progress else None, stream=stream)
    bar.enabled = bar.enabled and progress
    try:
        for batch in data:
            feed = {k: v for k, v in batch.feed.items() if k in wanted}
            try:
                values = session.run(names, feed)
            except Exception as exc:
                raise OnnxcompError(f"calibration run failed: {str(exc).splitlines()[0]}") from None
            stats.update(dict(zip(names, values, strict=True)), batch.size)
            del values
            bar.advance(batch.size)
    finally:
        bar.close()
    if stats.batches == 0:
        raise OnnxcompError("calibration data is empty")
    stats.seconds = time.perf_counter() - start
    return stats
