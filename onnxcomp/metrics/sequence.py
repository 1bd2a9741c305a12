"""sequence (ctc): greedy decode (argmax per step, repeats collapsed, blanks removed);
exact match and character error rate against the original's decode, or against labels.

The class axis is the last ([N, T, C], or [T, N, C] with --task-arg time_major=1); an
integer output [N, T] is taken as the argmax per step (ddddocr's export), decoded alike."""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult


class Sequence(TaskMetric):
    name = "sequence"
    binary = True

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._drops: list[float] = []
        self._exact: list[float] = []
        self._edits = [0, 0]  # new vs reference: edit distance, reference characters
        self._labelled: list[tuple[bool, bool]] = []
        self._label_edits = [0, 0, 0]  # original, compressed, label characters

    def decode(self, x: np.ndarray) -> list[tuple[int, ...]]:
        if x.dtype.kind in "iu":
            ids = x.reshape(x.shape[0], -1)
        elif x.ndim != 3:
            raise OnnxcompError(f"task 'sequence': output of shape {x.shape} is not [N, T, C]")
        else:
            ids = np.argmax(np.swapaxes(x, 0, 1) if self.settings.time_major else x, axis=-1)
        out = []
        for row in ids:
            keep = np.ones(row.shape, bool)
            keep[1:] = row[1:] != row[:-1]
            out.append(tuple(int(v) for v in row[keep] if v != self.settings.blank))
        return out

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        name, r = self.pick(ref, "any")
        seq_r, seq_n = self.decode(r), self.decode(np.asarray(new[name]))
        for a, b in zip(seq_r, seq_n, strict=True):
            same = a == b
            self._exact.append(float(same))
            self._edits[0] += edit_distance(a, b)
            self._edits[1] += len(a)
            if labels is None:
                self._drops.append(1.0 - float(same))
        if labels is not None:
            y = np.asarray(labels).reshape(len(seq_r), -1)
            for a, b, row in zip(seq_r, seq_n, y, strict=True):
                truth = tuple(int(v) for v in row if v >= 0 and v != self.settings.blank)
                ca, cb = a == truth, b == truth
                self._labelled.append((ca, cb))
                self._drops.append(float(ca) - float(cb))
                self._label_edits[0] += edit_distance(truth, a)
                self._label_edits[1] += edit_distance(truth, b)
                self._label_edits[2] += len(truth)

    def result(self) -> TaskResult:
        drops = np.asarray(self._drops, dtype=np.float64)
        exact = float(np.mean(self._exact)) if self._exact else 1.0
        figures = {
            "exact match vs original": exact,
            "character error vs original": self._edits[0] / max(self._edits[1], 1),
        }
        detail = f"greedy CTC decode, blank {self.settings.blank}"
        if self._labelled:
            chars = max(self._label_edits[2], 1)
            figures["CER (original)"] = self._label_edits[0] / chars
            figures["CER (compressed)"] = self._label_edits[1] / chars
            ref = float(np.mean([a for a, _ in self._labelled]))
            new = float(np.mean([b for _, b in self._labelled]))
            return TaskResult(
                self.name, "exact match", ref, new, drops, True, figures, "labels", detail
            )
        return TaskResult(
            self.name, "exact match vs original", 1.0, exact, drops, True, figures, detail=detail
        )


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Levenshtein distance (one row of the table at a time)."""
    if not a:
        return len(b)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]
