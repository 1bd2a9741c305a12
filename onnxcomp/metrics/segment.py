"""segment: mean IoU of the argmax mask against the original's (or the label mask).

The class axis is the output's component axis ([N, C, H, W] -> 1, [N, H, W, C] -> 3); a
single-channel output is a binary mask at a threshold (0.5 for probabilities, 0 for
logits, or --task-arg threshold=T)."""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.components import component_axis
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult

IGNORE = 255  # label value that is not scored (the usual segmentation convention)


class Segment(TaskMetric):
    name = "segment"
    binary = False

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._drops: list[np.ndarray] = []
        self._iou_ref: list[np.ndarray] = []
        self._iou_new: list[np.ndarray] = []
        self._pixel: list[np.ndarray] = []
        self._detail = ""

    def _mask(self, x: np.ndarray) -> np.ndarray:
        axis = component_axis(x.shape)
        if x.ndim < 3 or axis is None:
            raise OnnxcompError(f"task 'segment': output of shape {x.shape} is no mask")
        if x.shape[axis] == 1:
            t = self.settings.threshold
            if t is None:
                t = 0.5 if float(x.min()) >= 0.0 and float(x.max()) <= 1.0 else 0.0
            self._detail = f"binary mask at {t:g}"
            return (np.squeeze(x, axis) > t).astype(np.int64)
        self._detail = f"argmax over axis {axis} ({x.shape[axis]} classes)"
        return np.argmax(x, axis=axis)

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        name, r = self.pick(ref)
        mr, mn = self._mask(r), self._mask(np.asarray(new[name]))
        self._pixel.append((mr == mn).reshape(mr.shape[0], -1).mean(axis=1))
        if labels is None:
            iou = miou(mr, mn)
            self._iou_new.append(iou)
            self._drops.append(1.0 - iou)
            return
        y = np.asarray(labels).reshape(mr.shape)
        a, b = miou(y, mr), miou(y, mn)
        self._iou_ref.append(a)
        self._iou_new.append(b)
        self._drops.append(a - b)

    def result(self) -> TaskResult:
        drops = np.concatenate(self._drops) if self._drops else np.zeros(0)
        new = float(np.concatenate(self._iou_new).mean()) if self._iou_new else 1.0
        figures = {"pixel agreement": float(np.concatenate(self._pixel).mean())}
        if self._iou_ref:
            ref = float(np.concatenate(self._iou_ref).mean())
            return TaskResult(
                self.name, "mIoU", ref, new, drops, False, figures, "labels", self._detail
            )
        return TaskResult(
            self.name, "mIoU vs original", 1.0, new, drops, False, figures, detail=self._detail
        )


def miou(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per sample: IoU averaged over the classes present in either mask (1.0 when both
    masks hold only ignored pixels)."""
    n = truth.shape[0]
    t, p = truth.reshape(n, -1), pred.reshape(n, -1)
    out = np.ones(n)
    for i in range(n):
        keep = t[i] != IGNORE
        ti, pi = t[i][keep], p[i][keep]
        classes = np.union1d(np.unique(ti), np.unique(pi))
        if classes.size == 0:
            continue
        ious = [
            np.count_nonzero((ti == c) & (pi == c)) / np.count_nonzero((ti == c) | (pi == c))
            for c in classes
        ]
        out[i] = float(np.mean(ious))
    return out
