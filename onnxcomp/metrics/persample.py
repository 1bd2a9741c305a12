"""Per-sample drops of a candidate against the original, so a drop can carry a bound.

Each metric's drop is the mean of a per-sample drop: accuracy ``correct_orig -
correct_new`` (in {-1, 0, 1}), agreement ``1 - agree`` (in {0, 1}), cosine ``1 - cos``.
With several outputs the metric follows the worst output, and so do its samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.compare import cosine_rows, is_classifier_like, predictions


def agree_rows(ref: np.ndarray, new: np.ndarray) -> np.ndarray | None:
    """Top-1 agreement per sample, or None when the output is not classifier-like."""
    n = ref.shape[0] if ref.ndim else 1
    if ref.dtype.kind not in "fiub" or ref.dtype.kind in "iub":
        return np.all(ref.reshape(n, -1) == new.reshape(n, -1), axis=1)
    if is_classifier_like(ref):
        return np.argmax(ref, 1) == np.argmax(new, 1)
    return None


def cosine_drop_rows(ref: np.ndarray, new: np.ndarray) -> np.ndarray | None:
    if ref.dtype.kind not in "fiub":
        return None
    n = ref.shape[0] if ref.ndim else 1
    return 1.0 - cosine_rows(
        ref.astype(np.float64).reshape(n, -1), new.astype(np.float64).reshape(n, -1)
    )


def correct_rows(output: Any, labels: np.ndarray) -> np.ndarray:
    pred = predictions(np.asarray(output))
    labels = np.asarray(labels).reshape(-1)
    if pred.shape[0] != labels.shape[0]:
        raise OnnxcompError(
            f"labels: {pred.shape[0]} predictions for {labels.shape[0]} labels "
            "(the labels array needs one label per sample)"
        )
    return pred.astype(labels.dtype) == labels


class DropRows:
    """Accumulates per-sample drops batch by batch (one float per sample and output)."""

    def __init__(self) -> None:
        self._agree: dict[int, list[np.ndarray]] = {}
        self._cos: dict[int, list[np.ndarray]] = {}
        self._acc: list[np.ndarray] = []

    def update(self, ref_out: list[Any], new_out: list[Any]) -> None:
        for i, (r, n) in enumerate(zip(ref_out, new_out, strict=True)):
            r, n = np.asarray(r), np.asarray(n)
            if r.shape != n.shape:
                raise OnnxcompError(
                    f"output {i}: the models give different shapes {r.shape} vs {n.shape}"
                )
            agree = agree_rows(r, n)
            if agree is not None:
                self._agree.setdefault(i, []).append(1.0 - agree.astype(np.float64))
            cos = cosine_drop_rows(r, n)
            if cos is not None:
                self._cos.setdefault(i, []).append(cos)

    def update_accuracy(self, ref_label_out: Any, new_label_out: Any, labels: Any) -> None:
        ref_c = correct_rows(ref_label_out, labels).astype(np.float64)
        self._acc.append(ref_c - correct_rows(new_label_out, labels).astype(np.float64))

    def drops(self, metric: str) -> np.ndarray | None:
        """The per-sample drops of ``metric`` on its worst output (None if undefined)."""
        if metric == "accuracy":
            return np.concatenate(self._acc) if self._acc else None
        rows = self._agree if metric == "agreement" else self._cos
        per_output = [np.concatenate(v) for _, v in sorted(rows.items())]
        if not per_output:
            return None
        return max(per_output, key=lambda d: float(d.mean()))  # first worst on ties
