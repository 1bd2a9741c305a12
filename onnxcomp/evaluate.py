"""One number per candidate model: the metric an accuracy budget is spent on.

Every candidate is judged by metrics.Judge against the original's outputs, computed once
and kept (evaluation sets are small): the task's metric (``--task``, ``--metric-fn``, or
detected from the outputs: a YOLO head, class scores), else the worst output component.
The older names still work: ``accuracy`` (classify against labels), ``agreement``
(classify against the original), ``cosine`` (the worst component's error). A Python callable
``metric(session, data) -> float`` (higher is better) also works, without a bound.
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
from onnxcomp.metrics import Judge, TaskSettings, Verdict
from onnxcomp.options import METRICS
from onnxcomp.runtime.latency import session

MetricFn = Callable[[ort.InferenceSession, DataSource], float]


@dataclass(frozen=True)
class JudgeSpec:
    """How candidates are judged, picklable for worker processes (with a string
    ``metric_fn``)."""

    metric: str | None = None  # accuracy | agreement | cosine (older names)
    task: str | None = None
    task_arg: tuple[str, ...] = ()
    metric_fn: Any = None  # "module:function" or a callable(orig, new, labels) -> scores

    @classmethod
    def of(cls, options: Any) -> JudgeSpec | MetricFn | None:
        """From AutoOptions: a callable ``metric`` (session, data) stays as it is."""
        if callable(options.metric):
            return options.metric
        return cls(options.metric, options.task, tuple(options.task_arg), options.metric_fn)


@dataclass
class Score:
    value: float  # the metric, higher is better
    drop: float  # original's value minus this one (what the budget limits)
    drops: np.ndarray | None = None  # per-sample drops (mean = drop); None: custom metric
    # For a 0/1 metric (accuracy, agreement, decisions): the mean worst-component drop of
    # the outputs, a continuous gauge of how far a candidate moved before any sample
    # flips (a few hundred samples resolve no 0/1 difference between close candidates).
    deviation: float | None = None
    verdict: Verdict | None = None


class Evaluator:
    def __init__(
        self,
        original: str | os.PathLike,
        data: DataSource,
        *,
        metric: JudgeSpec | str | MetricFn | None = None,
        threads: int = 1,
    ) -> None:
        self.data = data
        self.threads = threads
        ref = session(original, threads)
        self._names = [o.name for o in ref.get_outputs()]
        self._declared = {o.name: tuple(o.shape) if o.shape else None for o in ref.get_outputs()}
        self._reference = [(b, _run(ref, b.feed)) for b in data]
        if not self._reference:
            raise OnnxcompError("the evaluation data yielded no samples")
        self.has_labels = all(b.labels is not None for b, _ in self._reference)
        self.custom: MetricFn | None = metric if callable(metric) else None
        spec = metric if isinstance(metric, JudgeSpec) else JudgeSpec(metric=metric)  # type: ignore[arg-type]
        self.spec = spec if self.custom is None else JudgeSpec()
        self._check_spec()
        if self.custom is not None:
            self.baseline = float(self.custom(ref, self.data))
            self.binary = False
            self.metric_name = getattr(self.custom, "__name__", "custom")
            return
        verdict = self._judge(lambda b, out: out)
        self.binary = verdict.binary
        self.metric_name = verdict.metric
        task = verdict.task
        self.baseline = task.original if task is not None else 1.0

    @property
    def metric(self) -> str | MetricFn:
        """The callable for a custom metric, else what the judge decides on."""
        return self.custom if self.custom is not None else self.metric_name

    def _check_spec(self) -> None:
        name = self.spec.metric
        if name is not None and name not in METRICS:
            raise OnnxcompError(f"--metric must be one of {', '.join(METRICS)}, got {name!r}")
        if name is not None and (self.spec.task or self.spec.metric_fn):
            raise OnnxcompError("give --metric or --task/--metric-fn, not both")
        if name == "accuracy" and not self.has_labels:
            raise OnnxcompError("metric 'accuracy' needs labels: give --labels NAME")

    def _make_judge(self) -> Judge:
        spec = self.spec
        task, detect = spec.task, True
        if spec.metric in ("accuracy", "agreement"):
            task = "classify"
        elif spec.metric == "cosine":
            detect = False
        return Judge(
            self._names, task, settings=TaskSettings.parse(spec.task_arg),
            metric_fn=spec.metric_fn, declared=self._declared, detect=detect,
        )  # fmt: skip

    def _judge(self, outputs: Callable[[Any, list[Any]], list[Any]]) -> Verdict:
        judge = self._make_judge()
        labelled = self.has_labels and (self.spec.metric != "agreement")
        for batch, ref_out in self._reference:
            labels = batch.labels if labelled else None
            judge.update(ref_out, outputs(batch, ref_out), labels, feed=batch.feed)
        return judge.verdict()

    @property
    def samples(self) -> int:
        return sum(b.size for b, _ in self._reference)

    def score(self, path: str | os.PathLike) -> Score:
        sess = session(path, self.threads)
        if self.custom is not None:
            value = float(self.custom(sess, self.data))
            return Score(value, self.baseline - value)
        verdict = self._judge(lambda b, _: _run(sess, b.feed))
        drops = verdict.drops
        drop = float(drops.mean()) if drops.size else 0.0
        deviation = None
        if verdict.binary and verdict.fidelity_drops is not None:
            deviation = float(verdict.fidelity_drops.mean())
        return Score(self.baseline - drop, drop, drops, deviation, verdict)


def _run(sess: ort.InferenceSession, feed: dict) -> list[Any]:
    """Bad data (wrong shape, rank or type) is the user's to fix: one line, exit 2."""
    try:
        return sess.run(None, feed)
    except Exception as exc:
        raise OnnxcompError(f"onnxruntime failed on the data: {one_line(exc)}") from None
