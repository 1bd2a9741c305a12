"""Streaming comparison of two models' outputs: agreement, cosine, error, accuracy.

Each accumulator takes batch after batch and never keeps the outputs, so evaluating on
a large set costs the memory of one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcomp.errors import OnnxcompError


def is_classifier_like(array: np.ndarray) -> bool:
    """[N, C] float scores with C > 1: top-1 agreement means something."""
    return array.ndim == 2 and array.shape[1] > 1 and array.dtype.kind == "f"


def predictions(array: np.ndarray) -> np.ndarray:
    """Class per sample: argmax of scores, or the array itself when it holds labels."""
    if is_classifier_like(array):
        return np.argmax(array, axis=1)
    return array.reshape(array.shape[0], -1)[:, 0] if array.ndim else array.reshape(1)


@dataclass
class OutputComparison:
    """Fidelity of one output of the compressed model to the original's."""

    name: str
    samples: int = 0
    agree: int = 0
    classifier: bool = False  # outputs are class scores or labels: agreement is defined
    cos_sum: float = 0.0
    max_abs_error: float = 0.0
    ref_max_abs: float = 0.0
    exact: bool = True
    numeric: int = 0  # samples of a numeric output (a sequence of maps has no cosine)

    def update(self, ref: np.ndarray, new: np.ndarray) -> None:
        if ref.shape != new.shape:
            raise OnnxcompError(
                f"output '{self.name}': the models give different shapes {ref.shape} vs {new.shape}"
            )
        n = ref.shape[0] if ref.ndim else 1
        self.samples += n
        if ref.dtype.kind not in "fiub":
            equal = ref.reshape(n, -1) == new.reshape(n, -1)
            self.agree += int(np.all(equal, axis=1).sum())
            self.classifier = True
            self.exact = self.exact and bool(equal.all())
            return
        if is_classifier_like(ref):
            self.classifier = True
            self.agree += int((np.argmax(ref, 1) == np.argmax(new, 1)).sum())
        elif ref.dtype.kind in "iub":
            self.classifier = True
            self.agree += int(np.all(ref.reshape(n, -1) == new.reshape(n, -1), axis=1).sum())
        r = ref.astype(np.float64).reshape(n, -1)
        c = new.astype(np.float64).reshape(n, -1)
        self.numeric += n
        self.cos_sum += float(cosine_rows(r, c).sum())
        err = float(np.max(np.abs(r - c))) if r.size else 0.0
        self.max_abs_error = max(self.max_abs_error, err)
        self.ref_max_abs = max(self.ref_max_abs, float(np.max(np.abs(r))) if r.size else 0.0)
        self.exact = self.exact and err == 0.0

    @property
    def top1_agreement(self) -> float | None:
        if not self.samples or not self.classifier:
            return None
        return self.agree / self.samples

    @property
    def cosine(self) -> float | None:
        return self.cos_sum / self.numeric if self.numeric else None


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per row; two all-zero rows are identical (1.0)."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    denom = np.where(na * nb == 0, 1.0, na * nb)
    cos = np.where(both_zero, 1.0, dot / denom)
    return np.clip(cos, -1.0, 1.0)


@dataclass
class Accuracy:
    """Fraction of samples whose predicted class equals the label."""

    correct: int = 0
    samples: int = 0

    def update(self, output: np.ndarray, labels: np.ndarray) -> None:
        pred = predictions(output)
        labels = np.asarray(labels).reshape(-1)
        if pred.shape[0] != labels.shape[0]:
            raise OnnxcompError(
                f"labels: {pred.shape[0]} predictions for {labels.shape[0]} labels "
                "(the labels array needs one label per sample)"
            )
        self.correct += int((pred.astype(labels.dtype) == labels).sum())
        self.samples += int(labels.shape[0])

    @property
    def value(self) -> float | None:
        return self.correct / self.samples if self.samples else None
