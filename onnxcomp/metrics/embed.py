"""embed: the neighbours an embedding retrieves. For each sample, its nearest neighbour
among the other samples under the original's embeddings must be among the compressed
model's k nearest (recall@k of the original's neighbour; per-sample 0/1), with the
per-sample cosine reported beside it; 1 - that cosine is the continuous gauge that
decisions on a few samples read (a neighbour flip rate needs hundreds, and one
embedding feature's error, unlike the vector's direction, is not what retrieval
sees). Token outputs [N, T, D] are mean-pooled over the real tokens: the attention
mask input (``--task-arg mask=NAME``, else an input whose name holds "mask" with T
positions; 0/1, or additive with 0 for a real token), else over every position."""

from __future__ import annotations

import numpy as np

from onnxcomp.metrics.compare import cosine_rows
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult

MIN_SAMPLES = 3  # a neighbour needs at least two other samples to be a choice


class Embed(TaskMetric):
    name = "embed"
    binary = True

    def __init__(self, settings=None) -> None:
        super().__init__(settings)
        self._ref: list[np.ndarray] = []
        self._new: list[np.ndarray] = []

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        name, r = self.pick(ref)
        weights = self._mask(r)
        self._ref.append(_pool(r, weights))
        self._new.append(_pool(np.asarray(new[name]), weights))

    def _mask(self, x: np.ndarray) -> np.ndarray | None:
        """[N, T] weights of the real tokens, when the output has tokens and a mask is fed."""
        if x.ndim != 3 or not self.feed:
            return None
        return token_weights(x.shape[0], x.shape[1], self.feed, self.settings.mask)

    def result(self) -> TaskResult:
        r, n = np.concatenate(self._ref), np.concatenate(self._new)
        cos = cosine_rows(r, n)
        figures = {"mean cosine": float(cos.mean()), "min cosine": float(cos.min())}
        if r.shape[0] < MIN_SAMPLES:
            return TaskResult(self.name, "mean cosine", 1.0, float(cos.mean()), 1.0 - cos,
                              False, figures, detail="too few samples for neighbours")  # fmt: skip
        k = min(self.settings.k, r.shape[0] - 1)
        truth = np.argmax(_similarity(r), axis=1)
        sim_n = _similarity(n)
        top = np.argsort(-sim_n, axis=1, kind="stable")[:, :k]
        hit_k = np.any(top == truth[:, None], axis=1)
        hit_1 = top[:, 0] == truth
        figures["recall@1 of the original's neighbour"] = float(hit_1.mean())
        figures[f"recall@{k} of the original's neighbour"] = float(hit_k.mean())
        return TaskResult(
            self.name, "recall@1 of the original's neighbour", 1.0, float(hit_1.mean()),
            1.0 - hit_1.astype(np.float64), True, figures,
            detail=f"cosine neighbours among {r.shape[0]} samples",
            gauge=1.0 - cos, gauge_label="embedding cosine drop",
        )  # fmt: skip


def token_weights(
    n: int, t: int, feed: dict[str, np.ndarray], mask: str | None = None
) -> np.ndarray | None:
    """[N, T] weights of the real tokens from the input ``mask`` (else one whose name holds
    "mask" with N x T values): a 0/1 mask as it is, an additive one 1 where it is >= 0.
    Shared with distillation's embedding loss (methods/distill/targets.py)."""
    names = [mask] if mask else sorted(feed)
    for key in names:
        if key not in feed or (not mask and "mask" not in key.lower()):
            continue
        m = np.asarray(feed[key], dtype=np.float64)
        if m.size != n * t:
            continue
        m = m.reshape(n, t)
        binary = bool(np.all((m == 0) | (m == 1)))
        return m if binary and m.any() else (m >= 0).astype(np.float64)
    return None


def _pool(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3 and weights is not None:
        w = weights[:, :, None]
        x = (x * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    elif x.ndim == 3:
        x = x.mean(axis=1)
    return x.reshape(x.shape[0], -1)


def _similarity(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    u = x / np.where(norm == 0, 1.0, norm)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    return sim
