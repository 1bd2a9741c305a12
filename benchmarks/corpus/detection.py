"""Shared pieces of the vision corpus: NMS, box matching, F1 and mAP@0.5, feed folders.

The detectors' reference is the fp32 model's own detections after the shipping package's
post-processing (run once in ``prepare`` and stored), so a compressed model is judged by
what a user of that package would see change: detections lost, gained, moved or relabelled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.corpus import Prepared, Score

IOU_MATCH = 0.5  # a detection matches a reference one of the same class at IoU >= 0.5


def save_feeds(folder: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """One .npz per feed (shapes may differ), what `onnxcomp --calib/--data` read."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds):
        np.savez_compressed(folder / f"{i:04d}.npz", **feed)
    return folder


def load_feeds(folder: Path) -> Iterator[dict[str, np.ndarray]]:
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            yield {k: z[k] for k in z.files}


def write_targets(folder: Path, targets: list) -> str:
    (folder / "targets.json").write_text(json.dumps(targets))
    return "targets.json"


def read_targets(prep: Prepared) -> list:
    return json.loads((prep.folder / prep.extra["targets"]).read_text())


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> list[int]:
    """Greedy NMS by decreasing score (x1, y1, x2, y2 boxes); the indices kept. A box is
    dropped when its IoU with a kept one exceeds ``iou_thresh``."""
    if len(boxes) == 0:
        return []
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(kind="stable")[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        order = rest[inter / np.where(union > 0, union, 1e-6) <= iou_thresh]
    return keep


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    iw = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    ih = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.where(union > 0, union, 1e-9)


def match(pred: np.ndarray, ref: np.ndarray) -> list[tuple[int, int]]:
    """COCO-style matching: predictions by decreasing score each take the unmatched
    reference of the same class with the highest IoU >= 0.5. Rows are
    (class, score, x1, y1, x2, y2); returns (pred index, ref index) pairs."""
    if len(pred) == 0 or len(ref) == 0:
        return []
    ious = iou_matrix(pred[:, 2:6], ref[:, 2:6])
    ious[pred[:, None, 0] != ref[None, :, 0]] = 0.0
    used = np.zeros(len(ref), dtype=bool)
    pairs = []
    for i in np.argsort(-pred[:, 1], kind="stable"):
        row = np.where(used, 0.0, ious[i])
        j = int(row.argmax())
        if row[j] >= IOU_MATCH:
            used[j] = True
            pairs.append((int(i), j))
    return pairs


def average_precision(hits: list[tuple[float, bool]], n_ref: int) -> float:
    """All-point interpolated AP (VOC 2010+, COCO's 101 points without the sampling)."""
    if n_ref == 0:
        return float("nan")
    if not hits:
        return 0.0
    hits = sorted(hits, key=lambda t: -t[0])
    tp = np.cumsum([h for _, h in hits], dtype=np.float64)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / n_ref
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    r = np.concatenate([[0.0], recall])
    return float(np.sum((r[1:] - r[:-1]) * precision))


def detection_score(preds: list[np.ndarray], refs: list[np.ndarray]) -> Score:
    """F1 at IoU 0.5 (same class) of ``preds`` against ``refs`` over all images, with
    mAP@0.5 (mean over the classes the reference has), precision, recall and counts."""
    n_pred = sum(len(p) for p in preds)
    n_ref = sum(len(r) for r in refs)
    tp = 0
    per_class: dict[int, list[tuple[float, bool]]] = {}
    ref_count: dict[int, int] = {}
    for pred, ref in zip(preds, refs, strict=True):
        pairs = match(pred, ref)
        tp += len(pairs)
        matched = {i for i, _ in pairs}
        for i, row in enumerate(pred):
            per_class.setdefault(int(row[0]), []).append((float(row[1]), i in matched))
        for row in ref:
            ref_count[int(row[0])] = ref_count.get(int(row[0]), 0) + 1
    f1 = 2 * tp / (n_pred + n_ref) if n_pred + n_ref else 1.0
    aps = [average_precision(per_class.get(c, []), n) for c, n in ref_count.items()]
    extra = {
        "map50": float(np.mean(aps)) if aps else 1.0,
        "precision": tp / n_pred if n_pred else 1.0,
        "recall": tp / n_ref if n_ref else 1.0,
        "detections": float(n_pred),
        "reference_detections": float(n_ref),
    }
    return Score("f1_vs_fp32", f1, extra)


def as_rows(dets: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Detections as a float [N, 6] array (class, score, x1, y1, x2, y2), also when empty."""
    arr = np.asarray(dets, dtype=np.float64)
    return arr.reshape(-1, 6) if arr.size else np.zeros((0, 6))
