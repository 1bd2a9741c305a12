"""Activation ranges from one streamed pass of onnxruntime over the calibration data.

For minmax, a copy of the model reduces each wanted tensor to its min and max inside
onnxruntime (ReduceMin/ReduceMax outputs): no activation is copied out, so a pass costs
about one inference. Histogram methods fetch the tensors as extra outputs, update a
mergeable histogram per tensor and drop them. Either way memory is one batch's
activations plus a fixed size per tensor, whatever the number of samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.io import heap
from onnxcomp.io.data import DataSource
from onnxcomp.io.progress import bar as progress_bar
from onnxcomp.numerics.histogram import (
    DEFAULT_BINS,
    Histogram,
    entropy_range,
    mse_range,
    percentile_range,
)
from onnxcomp.options import CALIB_METHODS

METHODS = CALIB_METHODS


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

    def update_range(self, lo: float, hi: float) -> None:
        """A batch's min and max computed elsewhere (in the graph); both finite."""
        self.min, self.max = min(self.min, lo), max(self.max, hi)

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


# Types onnxruntime's ReduceMin/ReduceMax take on CPU.
_REDUCIBLE = frozenset({ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16})


def _session(
    model: ir.Model,
    fetched: list[str],
    reduced: list[str],
    threads: int | None,
    max_only: frozenset[str] = frozenset(),
):
    """An onnxruntime session over a copy of the model that outputs the ``fetched``
    tensors and the min and max of the ``reduced`` ones (only the max of ``max_only``);
    returns it and its output names."""
    from onnxcomp.runtime.session import make_session

    outputs = list(fetched)

    def add_outputs(proto: onnx.ModelProto) -> None:
        present = {o.name for o in proto.graph.output}
        for name in fetched:  # graph inputs too: their histograms come from here
            if name not in present:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
        outputs.extend(_add_reductions(proto, reduced, max_only))

    try:
        session = make_session(
            model, threads=threads, optimize="basic", edit=add_outputs, lean=True
        )
    except Exception as exc:
        # A type onnxruntime's kernels do not take (an int32 Conv weight) passes
        # onnx.checker; onnxruntime says so first here. The user's model, not our graph.
        typed = type(exc).__name__ == "Fail" and "Type Error" in str(exc)
        if type(exc).__name__ != "InvalidGraph" and not typed:
            raise
        raise OnnxcompError(
            f"onnxruntime refuses the model for calibration: {one_line(exc)}"
        ) from None
    return session, outputs


def _add_reductions(
    proto: onnx.ModelProto, names: list[str], max_only: frozenset[str] = frozenset()
) -> list[str]:
    """ReduceMin/ReduceMax over all axes of each tensor, as scalar graph outputs."""
    graph = proto.graph
    taken = {v for n in graph.node for v in (*n.input, *n.output)}
    taken |= {v.name for v in (*graph.input, *graph.output)}
    outputs = []
    for i, name in enumerate(names):
        for op in ("ReduceMax",) if name in max_only else ("ReduceMin", "ReduceMax"):
            out = f"{name}__onnxcomp_{op[6:].lower()}"
            while out in taken:
                out += "_"
            taken.add(out)
            node = onnx.helper.make_node(op, [name], [out], f"onnxcomp_calib_{op}_{i}", keepdims=0)
            graph.node.append(node)
            graph.output.append(onnx.ValueInfoProto(name=out))
            outputs.append(out)
    return outputs


# Ops whose output is never negative: their calibrated minimum is taken as 0 without a
# ReduceMin. The quantization range is widened to hold 0 anyway (numeric.affine_params),
# so the scale and zero point are the same; ResNet-50 calibrates ~25% faster.
NONNEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "Softmax", "Abs"})


def _nonnegative(model: ir.Model, names: Iterable[str]) -> frozenset[str]:
    producers = {o.name: n for n in model.graph for o in n.outputs if o.name}
    found = set()
    for name in names:
        node = producers.get(name)
        if node is not None and node.domain in ("", "ai.onnx") and node.op_type in NONNEGATIVE_OPS:
            found.add(name)
    return frozenset(found)


def _reducible(model: ir.Model, names: list[str]) -> set[str]:
    """Tensors whose range can be reduced in the graph: known float types."""
    values = {v.name: v for v in model.graph.inputs}
    for node in model.graph:
        values.update((v.name, v) for v in node.outputs)
    return {n for n in names if n in values and values[n].dtype in _REDUCIBLE}


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
    reduced = _reducible(model, names) if method == "minmax" else set()
    odd = _run(model, stats, [n for n in names if n not in reduced], sorted(reduced), data,
               threads=threads, progress=progress, stream=stream,
               max_only=_nonnegative(model, reduced))  # fmt: skip
    if odd:  # an inf/NaN or empty tensor: its range comes from the filtered values
        again = Statistics.empty(sorted(odd), histograms=False)
        _run(model, again, sorted(odd), [], data, threads=threads, progress=False)
        stats.tensors.update(again.tensors)
    if stats.batches == 0:
        raise OnnxcompError("calibration data is empty")
    heap.trim()  # the session's float weights and activations are gone
    stats.seconds = time.perf_counter() - start
    return stats


def _run(
    model: ir.Model,
    stats: Statistics,
    fetched: list[str],
    reduced: list[str],
    data: DataSource,
    *,
    threads: int | None,
    progress: bool,
    stream: IO | None = None,
    max_only: frozenset[str] = frozenset(),
) -> set[str]:
    """One pass over ``data``; returns the reduced tensors whose min or max was not finite."""
    session, outputs = _session(model, fetched, reduced, threads, max_only)
    wanted = {i.name for i in session.get_inputs()}
    bar = progress_bar(data.num_samples, "calibrating", "samples", enabled=progress, stream=stream)
    odd: set[str] = set()
    try:
        for batch in data:
            feed = {k: v for k, v in batch.feed.items() if k in wanted}
            try:
                values = session.run(outputs, feed)
            except Exception as exc:
                raise OnnxcompError(f"calibration run failed: {one_line(exc)}") from None
            stats.update(dict(zip(fetched, values, strict=False)), batch.size)
            at = len(fetched)
            for name in reduced:
                if name in max_only:
                    lo, hi, at = 0.0, float(values[at]), at + 1
                else:
                    lo, hi, at = float(values[at]), float(values[at + 1]), at + 2
                if math.isfinite(lo) and math.isfinite(hi):
                    stats.tensors[name].update_range(lo, hi)
                else:
                    odd.add(name)
            del values
            bar.update(batch.size)
    finally:
        bar.close()
    return odd
