"""classify: top-1 (and top-k) agreement with the original, or accuracy with labels."""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult


def class_scores(outputs: Outputs, preferred: str | None = None) -> tuple[str, np.ndarray]:
    """The output holding class labels ([N] ints) or scores ([N, C] floats)."""
    if preferred is not None:
        if preferred not in outputs:
            raise OnnxcompError(f"--task-arg output={preferred}: no such output")
        return preferred, np.asarray(outputs[preferred])
    for name, value in outputs.items():
        a = np.asarray(value)
        if a.dtype.kind == "f" and a.ndim == 2 and a.shape[1] > 1:
            return name, a
    for name, value in outputs.items():
        a = np.asarray(value)
        if a.dtype.kind in "iu" and a.ndim == 1:
            return name, a
    raise OnnxcompError("task 'classify': no output looks like class scores [N, C] or labels [N]")


def _top1(a: np.ndarray) -> np.ndarray:
    return np.argmax(a, axis=1) if a.ndim == 2 else a.reshape(a.shape[0], -1)[:, 0]


class Classify(TaskMetric):
    name = "classify"
    binary = True

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._drops: list[np.ndarray] = []
        self._agree: list[np.ndarray] = []
        self._topk: list[np.ndarray] = []
        self._correct: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        name, r = class_scores(ref, self.settings.output)
        n = np.asarray(new[name])
        agree = _top1(r) == _top1(n)
        self._agree.append(agree)
        k = self.settings.k
        if r.ndim == 2 and r.shape[1] > k:
            top_new = np.argpartition(-n, k - 1, axis=1)[:, :k]
            self._topk.append(np.any(top_new == _top1(r)[:, None], axis=1))
        if labels is None:
            self._drops.append(1.0 - agree.astype(np.float64))
            return
        y = np.asarray(labels).reshape(-1)
        if y.shape[0] != r.shape[0]:
            raise OnnxcompError(
                f"labels: {r.shape[0]} predictions for {y.shape[0]} labels "
                "(the labels array needs one label per sample)"
            )
        cr = _top1(r).astype(y.dtype) == y
        cn = _top1(n).astype(y.dtype) == y
        self._correct.append((cr, cn))
        self._drops.append(cr.astype(np.float64) - cn.astype(np.float64))

    def result(self) -> TaskResult:
        drops = np.concatenate(self._drops) if self._drops else np.zeros(0)
        agree = float(np.concatenate(self._agree).mean()) if self._agree else 1.0
        figures = {"top-1 agreement": agree}
        if self._topk:
            figures[f"top-{self.settings.k} agreement"] = float(np.concatenate(self._topk).mean())
        if self._correct:
            cr = np.concatenate([c for c, _ in self._correct])
            cn = np.concatenate([c for _, c in self._correct])
            return TaskResult(
                self.name, "accuracy", float(cr.mean()), float(cn.mean()), drops, True,
                figures, "labels",
            )  # fmt: skip
        return TaskResult(self.name, "top-1 agreement", 1.0, agree, drops, True, figures)
