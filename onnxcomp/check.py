"""The side-by-side check: size, fidelity or accuracy, and latency, original vs compressed."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.io import model_io
from onnxcomp.io.data import DataSource, input_specs, open_data, synthetic
from onnxcomp.metrics import Judge, OutputComparison, Verdict
from onnxcomp.options import CheckOptions
from onnxcomp.runtime.latency import LatencyStats, compare_latency, session
from onnxcomp.stats import DropBound, drop_bound


@dataclass
class OutputFidelity:
    name: str
    top1_agreement: float | None
    cosine: float | None  # whole-tensor cosine, mean over samples: reported, never decides
    max_abs_error: float
    exact: bool
    worst_component: str | None = None  # e.g. "output0[:, 37]"
    worst_component_error: float | None = None  # relative squared error (decides)
    worst_component_cosine: float | None = None
    components: int | None = None


@dataclass
class CheckResult:
    original: str
    compressed: str
    original_bytes: int
    compressed_bytes: int
    original_param_bytes: int
    compressed_param_bytes: int
    data: str
    synthetic: bool
    samples: int
    outputs: list[OutputFidelity] = field(default_factory=list)
    labels: str | None = None
    accuracy_original: float | None = None
    accuracy_compressed: float | None = None
    latency_original: LatencyStats | None = None
    latency_compressed: LatencyStats | None = None
    threads: int = 1
    latency_batch: int | None = None  # samples in the feed that latency was timed on
    max_drop: float | None = None
    confidence: float | None = None  # gate on the drop's upper bound at this confidence
    drop_bound: DropBound | None = None
    notes: list[str] = field(default_factory=list)
    metric: str | None = None  # what the gate reads: the task's metric or the worst component
    measured_drop: float | None = None
    judgement: dict[str, Any] | None = None  # Verdict.to_dict(): task figures, components

    @property
    def size_ratio(self) -> float:
        return self.compressed_bytes / self.original_bytes if self.original_bytes else 0.0

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy_original is None or self.accuracy_compressed is None:
            return None
        return self.accuracy_original - self.accuracy_compressed

    @property
    def drop(self) -> float | None:
        """What ``--max-drop`` gates: the task metric's drop (accuracy with labels, top-1
        agreement, detection F1, ...) or, without a task, the worst component's error."""
        return self.measured_drop

    @property
    def latency_ratio(self) -> float | None:
        if not (self.latency_original and self.latency_compressed):
            return None
        return self.latency_compressed.median_ms / self.latency_original.median_ms

    @property
    def passed(self) -> bool:
        if self.max_drop is None:
            return True
        if self.confidence is not None:
            return self.drop_bound is not None and self.drop_bound.within(self.max_drop)
        return self.drop is not None and self.drop <= self.max_drop + 1e-12

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("size_ratio", "accuracy_drop", "drop", "latency_ratio", "passed"):
            d[key] = getattr(self, key)
        for key in ("latency_original", "latency_compressed"):
            stats = getattr(self, key)  # asdict would copy every timing: the summary only
            d[key] = stats.to_dict() if stats is not None else None
        return d


def check(
    original: str | os.PathLike,
    compressed: str | os.PathLike,
    options: CheckOptions | None = None,
    **kwargs: Any,
) -> CheckResult:
    """Compare two models on the same inputs; options as a CheckOptions or keywords
    (``data`` is any source data.py reads)."""
    options = options or CheckOptions(**kwargs)
    options.validate()
    data, labels, max_drop = options.data, options.labels, options.max_drop
    runs, threads, warmup = options.runs, options.threads, options.warmup
    confidence = options.confidence
    ref_model = model_io.load(original)
    new_model = model_io.load(compressed)
    specs = input_specs(ref_model)
    _same_interface(ref_model, new_model)
    source: DataSource = synthetic(specs) if data is None else open_data(data, specs, labels=labels)
    ref_sess, new_sess = session(original, threads), session(compressed, threads)
    result = CheckResult(
        str(original),
        str(compressed),
        model_io.file_size(original),
        model_io.file_size(compressed),
        model_io.tensor_bytes(ref_model),
        model_io.tensor_bytes(new_model),
        source.description,
        source.synthetic,
        0,
        labels=labels,
        threads=threads,
        max_drop=max_drop,
        confidence=confidence,
    )
    from onnxcomp.graph.storage_forms import storage_forms

    if any(f.form.startswith("codebook") for f in storage_forms(new_model)):
        result.notes.append(
            "codebook weights are decoded by onnxruntime at session creation: the model runs "
            "at fp32 speed with fp32 memory (a download/disk-size mode)"
        )
    first_feed = _compare_outputs(ref_sess, new_sess, source, result, options)
    if first_feed is None:
        raise OnnxcompError("the data source yielded no samples")
    if runs > 0:
        first = next(iter(first_feed.values()), None)  # None: a model without inputs
        result.latency_batch = int(first.shape[0]) if first is not None and first.ndim else 1
        result.latency_original, result.latency_compressed = compare_latency(
            [ref_sess, new_sess], first_feed, runs=runs, warmup=warmup
        )
    return result


def _same_interface(ref, new) -> None:
    ref_out = [v.name for v in ref.graph.outputs]
    new_out = [v.name for v in new.graph.outputs]
    if ref_out != new_out:
        raise OnnxcompError(f"models have different outputs: {ref_out} vs {new_out}")
    ref_in = [s.name for s in input_specs(ref)]
    new_in = [s.name for s in input_specs(new)]
    if ref_in != new_in:
        raise OnnxcompError(f"models have different inputs: {ref_in} vs {new_in}")


def _compare_outputs(ref_sess, new_sess, source: DataSource, result: CheckResult, options):
    names = [o.name for o in ref_sess.get_outputs()]
    declared = {o.name: tuple(o.shape) if o.shape else None for o in ref_sess.get_outputs()}
    comparisons = [OutputComparison(n) for n in names]
    judge = Judge(
        names, options.task, settings=options.task_settings(), metric_fn=options.metric_fn,
        declared=declared,
    )  # fmt: skip
    first_feed = None
    for batch in source:
        if first_feed is None:
            first_feed = batch.feed
        try:
            ref_out = ref_sess.run(None, batch.feed)
            new_out = new_sess.run(None, batch.feed)
        except Exception as exc:
            raise OnnxcompError(f"onnxruntime failed on the data: {one_line(exc)}") from None
        for comp, r, n in zip(comparisons, ref_out, new_out, strict=True):
            if np.shape(r) == np.shape(n):
                comp.update(np.asarray(r), np.asarray(n))
        judge.update(ref_out, new_out, batch.labels, feed=batch.feed)
        result.samples += batch.size
    if first_feed is None:
        return None
    verdict = judge.verdict()
    worst = {c.name: c for c in verdict.outputs}
    result.outputs = []
    for c in comparisons:
        w = worst.get(c.name)
        result.outputs.append(
            OutputFidelity(
                c.name, c.top1_agreement, c.cosine, c.max_abs_error, c.exact,
                w.label if w else None, w.worst_error if w else None,
                w.worst_cosine if w else None,
                w.components if w else None,
            )
        )  # fmt: skip
    _task_fields(result, verdict)
    if result.confidence is not None:
        result.drop_bound = drop_bound(
            verdict.drops, verdict.metric, result.confidence, binary=verdict.binary
        )
    return first_feed


def _task_fields(result: CheckResult, verdict: Verdict) -> None:
    result.metric = verdict.metric
    result.measured_drop = verdict.drop if verdict.drops.size else None
    result.judgement = verdict.to_dict()
    task = verdict.task
    if task is not None and task.against == "labels" and task.task == "classify":
        result.accuracy_original, result.accuracy_compressed = task.original, task.compressed
    if verdict.detected:
        result.notes.append(f"task detected: {verdict.task.task if verdict.task else ''} "
                            f"({verdict.detected}); --task sets it")  # fmt: skip
    for name in verdict.mismatched:
        result.notes.append(f"output {name}: the models give different shapes")
