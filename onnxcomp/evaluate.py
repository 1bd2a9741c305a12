"""One number per candidate model: the metric an accuracy budget is spent on.

accuracy: against labels in the evaluation data; agreement: top-1 agreement with the
original on classifier-like outputs; cosine: mean cosine similarity of the outputs.
A Python callable ``metric(session, data) -> float`` (higher is better) also works.
The original's outputs are computed once and kept (evaluation sets are small).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.io.data import DataSource
from onnxcomp.metrics import Accuracy, is_classifier_like
from onnxcomp.options import METRICS
from onnxcomp.persample import DropRows
from onnxcomp.runtime.latency import session

MetricFn = Callable[[ort.InferenceSession, DataSource], float]


@dataclass
class Score:
    value: float  # the metric, higher is better
    drop: float  # original's value minus this one (what the budget limits)
    drops: np.ndarray | None = None  # per-sample drops (mean = drop); None: custom metric
    # For a 0/1 metric (accuracy, agreement): the mean cosine drop of the outputs against
    # the original's, a continuous gauge of how far a candidate moved before any sample
    # flips (a few hundred samples resolve no 0/1 difference between close candidates).
    deviation: float | None = None


class Evaluator:
    def __init__(
        self,
        original: str | os.PathLike,
        data: DataSource,
        *,
        metric: str | MetricFn | None = None,
        threads: int = 1,
    ) -> None:
        self.data = data
        self.threads = threads
        ref = session(original, threads)
        self._reference = [(b, _run(ref, b.feed)) for b in data]
        if not self._reference:
            raise OnnxcompError("the evaluation data yielded no samples")
        has_labels = all(b.labels is not None for b, _ in self._reference)
        self.metric = metric or self._default_metric(has_labels)
        if self.metric == "accuracy" and not has_labels:
            raise OnnxcompError("metric 'accuracy' needs labels: give --labels NAME")
        if isinstance(self.metric, str) and self.metric not in METRICS:
            raise OnnxcompError(
                f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}"
            )
        self.baseline = self._value(ref, reference=True)[0]

    def _default_metric(self, has_labels: bool) -> str:
        if has_labels:
            return "accuracy"
        outputs = self._reference[0][1]
        return "agreement" if any(is_classifier_like(np.asarray(o)) for o in outputs) else "cosine"

    @property
    def samples(self) -> int:
        return sum(b.size for b, _ in self._reference)

    @property
    def metric_name(self) -> str:
        return (
            self.metric
            if isinstance(self.metric, str)
            else getattr(self.metric, "__name__", "custom")
        )

    def score(self, path: str | os.PathLike) -> Score:
        rows = DropRows()
        value, drops = self._value(session(path, self.threads), reference=False, rows=rows)
        deviation = None
        if self.metric in ("accuracy", "agreement"):
            cos = rows.drops("cosine")
            deviation = float(cos.mean()) if cos is not None else None
        return Score(value, self.baseline - value, drops, deviation)

    def _value(
        self, sess: ort.InferenceSession, *, reference: bool, rows: DropRows | None = None
    ) -> tuple[float, np.ndarray | None]:
        if callable(self.metric):
            return float(self.metric(sess, self.data)), None
        rows = rows if rows is not None else DropRows()
        if self.metric == "accuracy":
            acc = Accuracy()
            for batch, ref_out in self._reference:
                out = ref_out if reference else _run(sess, batch.feed)
                if not reference:
                    rows.update(ref_out, out)
                assert batch.labels is not None
                acc.update(np.asarray(_label_scores(out)), batch.labels)
                rows.update_accuracy(_label_scores(ref_out), _label_scores(out), batch.labels)
            return float(acc.value or 0.0), rows.drops("accuracy")
        if reference:
            return 1.0, None
        for batch, ref_out in self._reference:
            rows.update(ref_out, _run(sess, batch.feed))
        drops = rows.drops(self.metric)
        if drops is None:
            if self.metric == "agreement":
                raise OnnxcompError("metric 'agreement' needs a classifier-like output")
            raise OnnxcompError("metric 'cosine' needs a float output to compare")
        return 1.0 - float(drops.mean()), drops


def _run(sess: ort.InferenceSession, feed: dict) -> list[Any]:
    """Bad data (wrong shape, rank or type) is the user's to fix: one line, exit 2."""
    try:
        return sess.run(None, feed)
    except Exception as exc:
        raise OnnxcompError(f"onnxruntime failed on the data: {one_line(exc)}") from None


def _label_scores(outputs: list[Any]) -> Any:
    """The output holding labels or class scores (the first that looks like it)."""
    for o in outputs:
        a = np.asarray(o)
        if a.dtype.kind in "iu" and a.ndim == 1:
            return a
    for o in outputs:
        if is_classifier_like(np.asarray(o)):
            return o
    raise OnnxcompError("no model output looks like class scores or labels")
