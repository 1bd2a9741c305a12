"""Detection outputs to per-image detections: the head layouts exporters write, NMS,
and matching. Pure numpy.

Layouts (``--task-arg format=``, chosen from the first batch when ``auto``):
- ``yolov8``: one output [N, 4 + C, A] (channel-first: Ultralytics v8/v11 exports), rows
  cx, cy, w, h, then C class scores; a box's score is its best class score.
- ``yolov5``: one output [N, A, 5 + C] (channel-last: v5/v7 exports), cx, cy, w, h,
  objectness, C class scores; score = objectness x best class score.
- ``boxes-scores``: separate box [N, A, 4] (x1, y1, x2, y2) and score [N, A, C] (or [N,
  A]) outputs with the same anchor count A (SSD, RetinaNet, UltraFace; several strides are
  joined); rows of C >= 2 that sum to 1 are softmax with class 0 the background, dropped.
- ``nms``: already suppressed: one [N, K, 6] output (x1, y1, x2, y2, score, class), a
  [K, 7] one (batch, x1, y1, x2, y2, score, class), or boxes [N, K, 4] + scores [N, K] +
  classes [N, K] (+ a count [N]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcomp.errors import OnnxcompError

PRE_NMS = 3000  # candidates kept per image before NMS (highest scores)


@dataclass
class Detections:
    boxes: np.ndarray  # [k, 4] x1, y1, x2, y2
    scores: np.ndarray  # [k]
    classes: np.ndarray  # [k] int64

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def empty() -> Detections:
    return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))


def guess_layout(outputs: dict[str, np.ndarray]) -> str:
    """The layout of a detector's outputs, or a clear error naming what to set."""
    floats = {k: np.asarray(v) for k, v in outputs.items() if np.asarray(v).dtype.kind == "f"}
    heads = [a for a in floats.values() if yolo_axis(a.shape) is not None]
    if len(heads) == 1 or (heads and len(floats) <= 2):
        return "yolov8" if yolo_axis(heads[0].shape) == 1 else "yolov5"
    if any(a.ndim >= 2 and a.shape[-1] == 4 for a in floats.values()):
        counts = [a.shape[-2] for a in floats.values() if a.ndim >= 2 and a.shape[-1] == 4]
        if max(counts) <= 300 and len(outputs) >= 3:
            return "nms"
        return "boxes-scores"
    if any(a.ndim in (2, 3) and a.shape[-1] in (6, 7) for a in floats.values()):
        return "nms"
    raise OnnxcompError(
        "task 'detect': cannot tell the detection layout from the outputs "
        f"{ {k: v.shape for k, v in floats.items()} }; give --task-arg format=yolov8|yolov5|"
        "boxes-scores|nms"
    )


def yolo_axis(shape: tuple[int, ...]) -> int | None:
    """1 for [N, 4 + C, A], 2 for [N, A, 5 + C], None when the shape is no YOLO head: one
    axis of 5..400 box fields + class scores, the other at least 8x longer (anchors)."""
    if len(shape) != 3:
        return None
    p, q = shape[1], shape[2]
    if 5 <= p <= 400 and q >= max(8 * p, 200):
        return 1
    if 6 <= q <= 400 and p >= max(8 * q, 200):
        return 2
    return None


def decode(outputs: dict[str, np.ndarray], layout: str, settings) -> list[Detections]:
    """Per-image detections after score threshold and class-aware NMS."""
    if layout in ("yolov8", "yolov5"):
        raw = _yolo(outputs, layout)
    elif layout == "boxes-scores":
        raw = _boxes_scores(outputs)
    elif layout == "nms":
        return [_threshold(d, settings.score) for d in _nms_outputs(outputs)]
    else:
        raise OnnxcompError(f"--task-arg format: unknown detection layout {layout!r}")
    return [nms(b, s, c, settings) for b, s, c in raw]


def _head(outputs: dict[str, np.ndarray]) -> np.ndarray:
    for value in outputs.values():
        a = np.asarray(value)
        if a.dtype.kind == "f" and yolo_axis(a.shape) is not None:
            return a
    for value in outputs.values():  # format set by hand: the first float rank-3 output
        a = np.asarray(value)
        if a.dtype.kind == "f" and a.ndim == 3:
            return a
    raise OnnxcompError("task 'detect': no [N, fields, anchors] output for a YOLO layout")


def _yolo(outputs, layout: str):
    head = _head(outputs).astype(np.float64)
    if layout == "yolov8":
        if head.shape[1] > head.shape[2]:
            head = np.swapaxes(head, 1, 2)
        head = np.swapaxes(head, 1, 2)  # [N, A, 4 + C]
        cls = head[:, :, 4:]
        obj = None
    else:
        if head.shape[1] < head.shape[2]:
            head = np.swapaxes(head, 1, 2)
        cls = head[:, :, 5:]
        obj = head[:, :, 4]
    xy, wh = head[:, :, 0:2], head[:, :, 2:4]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=2)
    out = []
    for i in range(head.shape[0]):
        if cls.shape[2] == 0:
            assert obj is not None  # yolov5 without classes: objectness is the score
            scores, classes = obj[i], np.zeros(head.shape[1], np.int64)
        else:
            classes = np.argmax(cls[i], axis=1)
            scores = cls[i][np.arange(cls.shape[1]), classes]
            if obj is not None:
                scores = scores * obj[i]
        out.append((boxes[i], scores, classes))
    return out


def _boxes_scores(outputs):
    floats = [np.asarray(v, dtype=np.float64) for v in outputs.values()]
    floats = [a if a.ndim >= 3 or a.ndim == 0 else a[None] for a in floats]  # no batch axis
    boxes = [a for a in floats if a.ndim == 3 and a.shape[-1] == 4]
    if not boxes:
        raise OnnxcompError("task 'detect': no [N, A, 4] box output")
    per_box = []
    for b in boxes:
        cands = [
            a for a in floats
            if a is not b and a.ndim in (2, 3) and a.shape[1] == b.shape[1]
            and (a.ndim == 2 or a.shape[-1] != 4) and float(a.min()) >= 0 and float(a.max()) <= 1
        ]  # fmt: skip
        if not cands:
            raise OnnxcompError(
                f"task 'detect': no score output in [0, 1] with {b.shape[1]} anchors"
            )
        s = cands[0] if cands[0].ndim == 3 else cands[0][:, :, None]
        if s.shape[2] >= 2 and np.allclose(s.sum(axis=2), 1.0, atol=1e-3):
            s = s[:, :, 1:]  # softmax with the background first
        per_box.append((b, s))
    width = max(s.shape[2] for _, s in per_box)
    b = np.concatenate([b for b, _ in per_box], axis=1)
    s = np.concatenate(
        [np.pad(s, ((0, 0), (0, 0), (0, width - s.shape[2]))) for _, s in per_box], axis=1
    )
    classes = np.argmax(s, axis=2)
    scores = np.take_along_axis(s, classes[:, :, None], axis=2)[:, :, 0]
    return [(b[i], scores[i], classes[i]) for i in range(b.shape[0])]


def _nms_outputs(outputs) -> list[Detections]:
    arrays = [np.asarray(v) for v in outputs.values()]
    for a in arrays:
        if a.dtype.kind == "f" and a.ndim == 3 and a.shape[-1] == 6:
            return [
                Detections(r[:, :4].astype(np.float64), r[:, 4].astype(np.float64),
                           r[:, 5].astype(np.int64)) for r in a
            ]  # fmt: skip
        if a.dtype.kind == "f" and a.ndim == 2 and a.shape[-1] == 7:
            batches = int(a[:, 0].max()) + 1 if a.shape[0] else 1
            return [
                Detections(a[a[:, 0] == i, 1:5].astype(np.float64), a[a[:, 0] == i, 5],
                           a[a[:, 0] == i, 6].astype(np.int64)) for i in range(batches)
            ]  # fmt: skip
    boxes = next((a for a in arrays if a.ndim == 3 and a.shape[-1] == 4), None)
    if boxes is None:
        raise OnnxcompError("task 'detect': no suppressed-detection output recognised")
    rest = [a for a in arrays if a is not boxes and a.ndim == 2 and a.shape[:2] == boxes.shape[:2]]
    floats = [a for a in rest if a.dtype.kind == "f"]
    scores = floats[0] if floats else np.ones(boxes.shape[:2])
    ints = [a for a in rest if a is not scores]
    classes = ints[0] if ints else np.zeros(boxes.shape[:2])
    count = next((a.reshape(-1) for a in arrays if a.ndim == 1 and a.shape[0] == boxes.shape[0]),
                 None)  # fmt: skip
    out = []
    for i in range(boxes.shape[0]):
        k = int(count[i]) if count is not None else boxes.shape[1]
        out.append(Detections(boxes[i, :k].astype(np.float64), scores[i, :k].astype(np.float64),
                              classes[i, :k].astype(np.int64)))  # fmt: skip
    return out


def _threshold(d: Detections, score: float) -> Detections:
    keep = d.scores >= score
    return Detections(d.boxes[keep], d.scores[keep], d.classes[keep])


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, settings) -> Detections:
    """Class-aware greedy NMS (boxes offset per class so classes never suppress each other)."""
    keep = np.flatnonzero(scores >= settings.score)
    if keep.size > PRE_NMS:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:PRE_NMS]]
    if keep.size == 0:
        return empty()
    b, s, c = boxes[keep], scores[keep], classes[keep].astype(np.int64)
    span = float(np.max(np.abs(b))) * 2.0 + 1.0
    shifted = b + (c * span)[:, None]
    order = np.argsort(-s, kind="stable")
    chosen: list[int] = []
    while order.size and len(chosen) < settings.max_det:
        i = int(order[0])
        chosen.append(i)
        rest = order[1:]
        order = rest[iou(shifted[i : i + 1], shifted[rest])[0] <= settings.iou]
    idx = np.asarray(chosen, dtype=np.int64)
    return Detections(b[idx], s[idx], c[idx])


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of [n, 4] and [m, 4] x1, y1, x2, y2 boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match(truth: Detections, pred: Detections, threshold: float) -> np.ndarray:
    """For each prediction (in score order), whether it matches an unused truth box of its
    class at IoU >= threshold (greedy, highest score first)."""
    hit = np.zeros(len(pred), bool)
    if not len(pred) or not len(truth):
        return hit
    overlaps = iou(pred.boxes, truth.boxes)
    overlaps[pred.classes[:, None] != truth.classes[None, :]] = 0.0
    used = np.zeros(len(truth), bool)
    for i in np.argsort(-pred.scores, kind="stable"):
        row = np.where(used, 0.0, overlaps[i])
        j = int(np.argmax(row))
        if row[j] >= threshold:
            used[j] = True
            hit[i] = True
    return hit
