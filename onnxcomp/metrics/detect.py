"""detect: the detections a head gives after its decode and NMS, compared with the
original's (or with labels): per-image F1 at IoU 0.5 (the gate's per-sample figure),
pooled F1 and mAP@0.5. Layouts and thresholds: metrics/boxes.py, ``--task-arg``."""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.boxes import Detections, decode, guess_layout, match
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult


class Detect(TaskMetric):
    name = "detect"
    binary = False

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self.layout: str | None = None
        self._f1_new: list[float] = []
        self._f1_ref: list[float] = []  # with labels
        self._drops: list[float] = []
        self._ap = {"new": _AP(), "ref": _AP()}
        self._counts = [0, 0]  # detections: original, compressed
        self._labelled = False

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        if self.layout is None:
            fmt = self.settings.format
            self.layout = guess_layout(ref) if fmt in (None, "auto") else fmt
        det_r = decode(ref, self.layout, self.settings)
        det_n = decode(new, self.layout, self.settings)
        if len(det_r) != len(det_n):
            raise OnnxcompError("task 'detect': the models give different image counts")
        truths = _labels(labels, len(det_r)) if labels is not None else det_r
        self._labelled = labels is not None
        t = self.settings.match_iou
        for truth, r, n in zip(truths, det_r, det_n, strict=True):
            self._counts[0] += len(r)
            self._counts[1] += len(n)
            fn = _f1(truth, n, t)
            self._f1_new.append(fn)
            self._ap["new"].add(truth, n, t)
            if labels is None:
                self._drops.append(1.0 - fn)
            else:
                fr = _f1(truth, r, t)
                self._f1_ref.append(fr)
                self._ap["ref"].add(truth, r, t)
                self._drops.append(fr - fn)

    def result(self) -> TaskResult:
        drops = np.asarray(self._drops, dtype=np.float64)
        s = self.settings
        detail = (
            f"{self.layout} decode, score >= {s.score:g}, NMS IoU {s.iou:g}, "
            f"match IoU {s.match_iou:g}"
        )
        figures = {
            "detections (original)": float(self._counts[0]),
            "detections (compressed)": float(self._counts[1]),
            "pooled F1": self._ap["new"].pooled_f1(),
            "mAP@0.5": self._ap["new"].map(),
        }
        new = float(np.mean(self._f1_new)) if self._f1_new else 1.0
        if self._labelled:
            figures["mAP@0.5 (original)"] = self._ap["ref"].map()
            ref = float(np.mean(self._f1_ref)) if self._f1_ref else 1.0
            return TaskResult(self.name, "F1", ref, new, drops, False, figures, "labels", detail)
        return TaskResult(self.name, "F1 vs original", 1.0, new, drops, False, figures,
                          detail=detail)  # fmt: skip


def _f1(truth: Detections, pred: Detections, threshold: float) -> float:
    if not len(truth) and not len(pred):
        return 1.0
    tp = int(match(truth, pred, threshold).sum())
    return 2.0 * tp / (len(truth) + len(pred))


def _labels(labels: np.ndarray, images: int) -> list[Detections]:
    """Labels as [N, K, 5] (x1, y1, x2, y2, class; class < 0 pads)."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 2:
        y = y[None]
    if y.ndim != 3 or y.shape[0] != images or y.shape[-1] != 5:
        raise OnnxcompError(
            f"labels for 'detect' must be [N, K, 5] (x1, y1, x2, y2, class; class -1 pads), "
            f"got {np.asarray(labels).shape} for {images} images"
        )
    out = []
    for row in y:
        row = row[row[:, 4] >= 0]
        out.append(Detections(row[:, :4], np.ones(row.shape[0]), row[:, 4].astype(np.int64)))
    return out


class _AP:
    """Pooled matches over images: F1 and VOC all-point AP per class."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.hits: list[np.ndarray] = []
        self.classes: list[np.ndarray] = []
        self.truth: dict[int, int] = {}

    def add(self, truth: Detections, pred: Detections, threshold: float) -> None:
        self.scores.append(pred.scores)
        self.hits.append(match(truth, pred, threshold))
        self.classes.append(pred.classes)
        for c in truth.classes.tolist():
            self.truth[int(c)] = self.truth.get(int(c), 0) + 1

    def pooled_f1(self) -> float:
        preds = sum(h.size for h in self.hits)
        truths = sum(self.truth.values())
        if preds + truths == 0:
            return 1.0
        return 2.0 * sum(int(h.sum()) for h in self.hits) / (preds + truths)

    def map(self) -> float:
        if not self.truth:
            return 1.0 if not sum(h.size for h in self.hits) else 0.0
        s = np.concatenate(self.scores) if self.scores else np.zeros(0)
        h = np.concatenate(self.hits) if self.hits else np.zeros(0, bool)
        c = np.concatenate(self.classes) if self.classes else np.zeros(0, np.int64)
        aps = []
        for cls, count in sorted(self.truth.items()):
            mask = c == cls
            order = np.argsort(-s[mask], kind="stable")
            tp = np.cumsum(h[mask][order])
            fp = np.cumsum(~h[mask][order])
            recall = tp / count
            precision = tp / np.maximum(tp + fp, 1)
            aps.append(_area(recall, precision))
        return float(np.mean(aps))


def _area(recall: np.ndarray, precision: np.ndarray) -> float:
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))
