"""regress: relative error per component; a sample's drop is its mean relative error
over components, each scaled by that component's spread in the original (so a small
component counts as much as a large one)."""

from __future__ import annotations

import numpy as np

from onnxcomp.metrics.components import component_axis
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult


class Regress(TaskMetric):
    name = "regress"
    binary = False

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._ref: list[np.ndarray] = []
        self._new: list[np.ndarray] = []
        self._name = ""

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        self._name, r = self.pick(ref)
        n = np.asarray(new[self._name])
        axis = component_axis(r.shape)
        self._ref.append(_rows(r, axis))
        self._new.append(_rows(n, axis))

    def result(self) -> TaskResult:
        r, n = np.concatenate(self._ref), np.concatenate(self._new)  # [N, C, rest]
        scale = np.sqrt(np.mean((r - r.mean(axis=(0, 2), keepdims=True)) ** 2, axis=(0, 2)))
        level = np.sqrt(np.mean(r**2, axis=(0, 2)))
        scale = np.where(scale > 1e-6 * np.maximum(level, 1e-30), scale, np.maximum(level, 1e-12))
        rel = np.abs(n - r).mean(axis=2) / np.asarray(scale)[None, :]  # [N, C]
        per_sample = np.minimum(rel, 1.0).mean(axis=1)
        per_comp = rel.mean(axis=0)
        worst = int(np.argmax(per_comp)) if per_comp.size else 0
        figures = {
            "mean relative error": float(per_sample.mean()) if per_sample.size else 0.0,
            "worst component": float(worst),
            "worst component relative error": float(per_comp[worst]) if per_comp.size else 0.0,
        }
        return TaskResult(
            self.name, "1 - mean relative error", 1.0, 1.0 - figures["mean relative error"],
            per_sample, False, figures, detail=f"output '{self._name}', error / spread",
        )  # fmt: skip


def _rows(x: np.ndarray, axis: int | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        x = x.reshape(1)
    if axis is None:
        return x.reshape(x.shape[0], 1, -1)
    return np.moveaxis(x, axis, 1).reshape(x.shape[0], x.shape[axis], -1)
