"""threshold: the decisions a score output makes at a threshold (wake word, VAD, binary
classifiers) agree with the original's, or match labels."""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult


class Threshold(TaskMetric):
    name = "threshold"
    binary = True

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._agree: list[np.ndarray] = []
        self._labelled: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._positive = 0
        self._decisions = 0

    @property
    def t(self) -> float:
        return 0.5 if self.settings.threshold is None else self.settings.threshold

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        name, r = self.pick(ref)
        n = np.asarray(new[name])
        b = r.shape[0] if r.ndim else 1
        dr = (r > self.t).reshape(b, -1)
        dn = (n > self.t).reshape(b, -1)
        self._positive += int(dr.sum())
        self._decisions += int(dr.size)
        self._agree.append(np.all(dr == dn, axis=1))
        if labels is not None:
            y = np.asarray(labels).reshape(b, -1).astype(bool)
            if y.shape != dr.shape:
                raise OnnxcompError(
                    f"labels: shape {np.asarray(labels).shape} does not match the "
                    f"decisions of output '{name}' {r.shape}"
                )
            self._labelled.append((y, dr, dn))

    def result(self) -> TaskResult:
        agree = np.concatenate(self._agree) if self._agree else np.zeros(0, bool)
        figures = {
            "decision agreement": float(agree.mean()) if agree.size else 1.0,
            "positive share (original)": self._positive / max(self._decisions, 1),
        }
        detail = f"decision = score > {self.t:g}"
        if not self._labelled:
            return TaskResult(
                self.name, "decision agreement", 1.0, figures["decision agreement"],
                1.0 - agree.astype(np.float64), True, figures, detail=detail,
            )  # fmt: skip
        y = np.concatenate([t[0] for t in self._labelled])
        dr = np.concatenate([t[1] for t in self._labelled])
        dn = np.concatenate([t[2] for t in self._labelled])
        cr, cn = np.all(dr == y, axis=1), np.all(dn == y, axis=1)
        figures["balanced accuracy (original)"] = _balanced(y, dr)
        figures["balanced accuracy (compressed)"] = _balanced(y, dn)
        return TaskResult(
            self.name, "accuracy", float(cr.mean()), float(cn.mean()),
            cr.astype(np.float64) - cn.astype(np.float64), True, figures, "labels", detail,
        )  # fmt: skip


def _balanced(y: np.ndarray, d: np.ndarray) -> float:
    pos, neg = y.sum(), (~y).sum()
    tpr = float((d & y).sum() / pos) if pos else 1.0
    tnr = float((~d & ~y).sum() / neg) if neg else 1.0
    return 0.5 * (tpr + tnr)
