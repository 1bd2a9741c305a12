"""The one judgement every decision uses: the task's metric when there is one, else the
worst output component; the global cosine is carried along for reports only.

check's gate, auto's budget and bound, the int8 measure step's guard, int4's and the
codebook's per-layer sensitivity and the repair guard all feed batches of (original,
candidate) outputs into a ``Judge`` and read a ``Verdict``: its per-sample drops (for
bounds), its drop (for budgets) and what it rests on (for reports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics import tasks
from onnxcomp.metrics.components import ComponentStats, ComponentSummary, summarize
from onnxcomp.metrics.task import TaskMetric, TaskResult, TaskSettings


@dataclass
class Verdict:
    task: TaskResult | None
    detected: str | None  # why the task was chosen from the outputs ("" when given)
    outputs: list[ComponentSummary] = field(default_factory=list)
    worst: ComponentSummary | None = None  # the worst component over all outputs
    fidelity_drops: np.ndarray | None = None  # per-sample drops of what decides below
    fidelity_label: str = ""  # what decides without a task (worst component, agreement)
    mismatched: list[str] = field(default_factory=list)  # outputs of different shapes
    label_outputs: dict[str, float] = field(default_factory=dict)  # non-float agreement

    @property
    def drops(self) -> np.ndarray:
        if self.task is not None:
            return self.task.drops
        return self.fidelity_drops if self.fidelity_drops is not None else np.zeros(0)

    @property
    def drop(self) -> float:
        d = self.drops
        return float(d.mean()) if d.size else 0.0

    @property
    def binary(self) -> bool:
        if self.task is not None:
            return self.task.binary
        return not self.fidelity_label.startswith("worst component")

    @property
    def metric(self) -> str:
        if self.task is not None:
            return f"{self.task.task}: {self.task.metric}"
        return self.fidelity_label

    def gauge(self) -> tuple[float, str]:
        """(drop, its name) for decisions taken on a few calibration samples: a
        continuous task metric (detection F1, mIoU, errors) as it is; for a 0/1 one
        (agreement, decisions) the worst component, since a few samples resolve no flip
        rate but do show how far the outputs moved; a 0/1 task with a continuous measure
        of its own (embed: the embedding's cosine) gives that instead."""
        if self.task is not None and not self.task.binary:
            return self.drop, f"{self.task.task} {self.task.metric}"
        if self.task is not None and self.task.gauge is not None and self.task.gauge.size:
            return float(self.task.gauge.mean()), f"{self.task.task} {self.task.gauge_label}"
        d = self.fidelity_drops
        value = float(d.mean()) if d is not None and d.size else 0.0
        if self.worst is not None and self.worst.worst_error > value:
            # Bounded but order-keeping: past 1 (a component broken, or one the original
            # barely uses, like a CTC class at 1e-9) two candidates still rank, and no
            # 1e5 swamps a tolerance.
            value = min(self.worst.worst_error, 1.0) + 1e-6 * math.log1p(self.worst.worst_error)
        return value, "worst component error"

    @property
    def worst_cosine(self) -> float:
        return self.worst.worst_cosine if self.worst is not None else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "drop": self.drop,
            "binary": self.binary,
            "samples": int(self.drops.size),
            "task": self.task.to_dict() if self.task is not None else None,
            "detected": self.detected,
            "worst_component": _component_dict(self.worst) if self.worst else None,
            "outputs": [_component_dict(c) for c in self.outputs],
            "mismatched_outputs": list(self.mismatched),
        }


def _component_dict(c: ComponentSummary) -> dict[str, Any]:
    return {
        "output": c.name,
        "label": c.label,
        "axis": c.axis,
        "components": c.components,
        "worst_index": c.worst_index,
        "worst_error": c.worst_error,
        "worst_cosine": c.worst_cosine,
        "global_cosine": c.global_cosine,
        "negligible_components": c.negligible,
    }


class Judge:
    """Streams batches of both models' outputs; ``verdict()`` at the end.

    ``task``: a TaskMetric, a task name, or None (detected from the first batch when
    ``detect`` is set: a YOLO head or class scores; else the worst component decides).
    ``declared``: the outputs' declared shapes (symbolic dims as strings), which tell the
    component axis from batch/sequence/anchor axes.
    """

    def __init__(
        self,
        names: Sequence[str],
        task: TaskMetric | str | None = None,
        *,
        settings: TaskSettings | None = None,
        metric_fn: Any = None,
        declared: dict[str, tuple | None] | None = None,
        detect: bool = True,
    ) -> None:
        self.names = list(names)
        self.settings = settings or TaskSettings()
        self.task = (
            task if isinstance(task, TaskMetric) else tasks.make(task, self.settings, metric_fn)
        )
        self.detected: str | None = "" if self.task is not None else None
        self._detect = detect and self.task is None
        self.declared = declared or {}
        self._stats: dict[str, ComponentStats] = {}
        self._exact: dict[str, list[np.ndarray]] = {}
        self._mismatch: dict[str, list[np.ndarray]] = {}
        self._labels_seen = False

    @classmethod
    def for_session(cls, session: Any, options: Any = None) -> Judge:
        """The judge of a reference onnxruntime session's outputs, its task from
        ``options`` (TaskOptions or None: detected, else the worst component)."""
        return cls(
            [o.name for o in session.get_outputs()],
            getattr(options, "task", None),
            settings=options.task_settings() if options is not None else None,
            metric_fn=getattr(options, "metric_fn", None),
            declared=declared_shapes(session),
        )

    def update(
        self, ref: Sequence[Any], new: Sequence[Any], labels: Any = None, feed: Any = None
    ) -> None:
        """One batch of both models' outputs (``feed``: its inputs, for tasks that read
        them, e.g. the attention mask embeddings are pooled with)."""
        ref_d = {n: _array(v) for n, v in zip(self.names, ref, strict=True)}
        new_d = {n: _array(v) for n, v in zip(self.names, new, strict=True)}
        if self._detect:
            self._detect = False
            found = tasks.detect(ref_d)
            if found is not None:
                if len(found) > 2 and self.settings.output is None:
                    self.settings = replace(self.settings, output=found[2])
                self.task, self.detected = tasks.make(found[0], self.settings), found[1]
        for name in self.names:
            self._fidelity(name, ref_d[name], new_d[name])
        if labels is not None:
            self._labels_seen = True
            if self.task is None:
                raise OnnxcompError(
                    "labels given but no output looks like class scores or labels; "
                    "give --task to say how the outputs are read"
                )
        if self.task is not None:
            self.task.feed = feed
            self.task.update(ref_d, new_d, labels)

    def _fidelity(self, name: str, r: np.ndarray, n: np.ndarray) -> None:
        rows = r.shape[0] if r.ndim else 1
        if r.dtype.kind not in "fiub" or r.dtype.kind in "iub":
            if r.shape != n.shape:
                self._mismatch.setdefault(name, []).append(np.ones(rows))
                return
            same = np.all(r.reshape(rows, -1) == n.reshape(rows, -1), axis=1)
            self._exact.setdefault(name, []).append(1.0 - same.astype(np.float64))
            return
        if r.shape != n.shape or name in self._mismatch:
            self._mismatch.setdefault(name, []).append(np.ones(rows))
            return
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = ComponentStats(name)
        stats.update(r, n, self.declared.get(name))

    def verdict(self) -> Verdict:
        result = self.task.result() if self.task is not None else None
        live = [s for s in self._stats.values() if s.samples]
        outputs = [summarize(s) for s in live]
        # (mean drop, what it is, per-sample drops) of every output; the worst decides
        candidates: list[tuple[float, str, np.ndarray]] = []
        for s, summary in zip(live, outputs, strict=True):
            d = s.drops(summary.worst_index)
            candidates.append((_mean(d), f"worst component error ({summary.label})", d))
        for name, rows in self._exact.items():
            candidates.append((_mean(d := np.concatenate(rows)), f"agreement of '{name}'", d))
        for name, rows in self._mismatch.items():
            d = np.concatenate(rows)
            candidates.append((_mean(d), f"output '{name}' changed shape", d))
        worst = max(outputs, key=lambda c: c.worst_error) if outputs else None
        drops, label = None, "no output to compare"
        if candidates:
            _, label, drops = max(candidates, key=lambda c: c[0])
        agreement = {k: 1.0 - _mean(np.concatenate(v)) for k, v in self._exact.items()}
        return Verdict(
            result, self.detected, outputs, worst, drops, label, sorted(self._mismatch),
            agreement,
        )  # fmt: skip


def _mean(d: np.ndarray) -> float:
    return float(d.mean()) if d.size else 0.0


def declared_shapes(session: Any) -> dict[str, tuple | None]:
    """An onnxruntime session's output shapes as declared (symbolic dims as strings):
    what tells a component axis from batch, sequence and anchor axes."""
    return {o.name: tuple(o.shape) if o.shape else None for o in session.get_outputs()}


def _array(value: Any) -> np.ndarray:
    """onnxruntime's outputs as arrays (a sequence of maps becomes an object array)."""
    return np.asarray(value) if not isinstance(value, list) else np.asarray(value, dtype=object)


class Reference:
    """A reference session's outputs on ``feeds``, run once, and the Verdict of any other
    model on the same feeds: what a search over many trial models (debug's restored
    layers, the codebook budget's one-bit steps) judges each trial by."""

    def __init__(self, session: Any, feeds: list[dict[str, np.ndarray]], options: Any) -> None:
        self.session, self.feeds, self.options = session, feeds, options
        self.expected = [session.run(None, f) for f in feeds]

    def verdict(self, model: Any) -> Verdict:
        """``model`` (anything ``runtime.session.make_session`` opens) on the feeds."""
        from onnxcomp.runtime.session import make_session

        session = make_session(model)
        judge = Judge.for_session(self.session, self.options)
        for feed, expected in zip(self.feeds, self.expected, strict=True):
            judge.update(expected, session.run(None, feed), feed=feed)
        return judge.verdict()
