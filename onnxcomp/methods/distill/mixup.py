"""Mixed inputs labelled by the teacher on the fly (function matching).

A few hundred unlabeled inputs are few for a network that lost half its channels: the
student learns the teacher's function on those points and drifts between them. The
teacher is at hand, so every training minibatch can be new points: each sample blended
with another of the minibatch (``lam * x + (1 - lam) * partner``, ``lam`` drawn from
Beta(ALPHA, ALPHA) and folded to >= 0.5, so the sample dominates), the teacher run on
the blends by onnxruntime, the student trained to match it there (Beyer et al., "A good
teacher is patient and consistent", 2022). Only models whose inputs are all float mix
(token ids and masks have no blend); the held-back samples stay real, so early stopping
and the guard judge the task on real inputs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from onnxcomp.methods.distill.targets import Target

ALPHA = 0.4


def mixable(feeds: dict[str, np.ndarray], targets: list[Target]) -> bool:
    """Every input float, no target read through a mask of its inputs."""
    floats = all(np.asarray(v).dtype.kind == "f" for v in feeds.values())
    return bool(feeds) and floats and all(t.weights is None for t in targets)


class Mixer:
    """``mixer(idx, rng)``: (blended feeds of the samples ``idx``, targets holding the
    teacher's outputs on them, indexed 0..len(idx)-1)."""

    def __init__(
        self, session: Any, names: list[str], swap: set[int], feeds: dict[str, np.ndarray],
        targets: list[Target], fixed: int | None,
    ) -> None:  # fmt: skip
        self.session, self.names, self.swap = session, names, swap
        self.feeds, self.targets, self.fixed = feeds, targets, fixed

    def __call__(
        self, idx: np.ndarray, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], list[Target]]:
        lam = rng.beta(ALPHA, ALPHA, size=len(idx))
        lam = np.maximum(lam, 1 - lam).astype(np.float32)
        partner = idx[rng.permutation(len(idx))]
        mixed = {}
        for name, v in self.feeds.items():
            w = lam.reshape(-1, *([1] * (v.ndim - 1)))
            mixed[name] = (w * v[idx] + (1 - w) * v[partner]).astype(v.dtype)
        outs = self._teacher(mixed)
        fresh = [replace(t, teacher=_as_stored(t, outs[t.name])) for t in self.targets]
        return mixed, fresh

    def _teacher(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The teacher's outputs, samples first, in runs of the model's fixed batch."""
        n = len(next(iter(feeds.values())))
        step = self.fixed or n
        parts: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            run = self.session.run(
                self.names, {k: v[start : start + step] for k, v in feeds.items()}
            )
            parts.append([np.swapaxes(o, 0, 1) if i in self.swap else o for i, o in enumerate(run)])
        return {
            name: np.concatenate([p[i] for p in parts]).astype(np.float32)
            for i, name in enumerate(self.names)
        }


def _as_stored(t: Target, output: np.ndarray) -> np.ndarray:
    """The teacher's output as the target stores it (KL on probabilities: their log)."""
    if t.kind == "kl" and t.probabilities:
        return np.log(np.clip(output, 1e-12, None))
    return output
