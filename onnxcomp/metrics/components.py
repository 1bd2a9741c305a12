"""Fidelity per output component: no part of an output can hide behind the rest.

One cosine over a whole output tensor is dominated by its largest values: a YOLO head
``[N, 4 + classes, anchors]`` is mostly box coordinates in pixels, and class scores
(0..1) that collapsed to nothing leave that cosine at 0.995. Here each *component* (one
slice along the output's feature axis: every row of a ``[N, C, A]`` head, every class
score, every hidden feature) gets its own cosine, pooled over samples and positions, and
the output is judged by its worst component.

The component axis is the smallest non-batch axis the model declares with a fixed size
> 1 (exporters leave batch, sequence and anchor counts symbolic, or they are the long
axes: ``[1, 84, 8400]`` -> 84 rows, ``[N, 40, 6625]`` with only 6625 fixed -> classes,
``[N, T, 384]`` -> features), else the last axis.

Per-sample drops decompose the pooled figure exactly: with ``a``, ``b`` one component's
values normalized by their pooled norms, ``1 - cos = sum_i 0.5 * |a_i - b_i|^2``, so
``N * 0.5 * |a_i - b_i|^2`` is sample ``i``'s share and their mean is ``1 - cos``: the
statistical bound on a drop works on them as on any per-sample metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxcomp.errors import OnnxcompError

# A component whose energy (in both models) is below this share of the output's median
# component energy is numerically nothing (a dead channel, an unused class): its cosine
# is noise, so it is counted apart instead of deciding.
NEGLIGIBLE_ENERGY = 1e-6


def component_axis(shape: tuple[int, ...], declared: tuple | None = None) -> int | None:
    """The feature axis of an output of ``shape`` (axis 0 = samples), or None when the
    output has one value per sample."""
    if len(shape) <= 1:
        return None
    axes = list(range(1, len(shape)))
    if declared is not None and len(declared) == len(shape):
        fixed = [a for a in axes if isinstance(declared[a], int) and declared[a] > 1]
        if fixed:
            return min(fixed, key=lambda a: (declared[a], a))
    sized = [a for a in axes if shape[a] > 1]
    if not sized:
        return None
    if len(sized) == 1:
        return sized[0]
    if declared is None or len(declared) != len(shape):
        return min(sized, key=lambda a: (shape[a], a))
    return sized[-1]


@dataclass
class ComponentStats:
    """Running sums of one output, per component and per sample (float64 sums, float32
    per-sample rows: an evaluation set of 1,000 samples x 1,000 components is 12 MB)."""

    name: str
    axis: int | None = None
    components: int = 0
    ab: np.ndarray | None = None  # pooled sums per component
    aa: np.ndarray | None = None
    bb: np.ndarray | None = None
    rows: list[np.ndarray] = field(default_factory=list)  # [n, 3, C] per batch
    global_cos: list[np.ndarray] = field(default_factory=list)  # whole-tensor cosine per sample

    def update(self, ref: np.ndarray, new: np.ndarray, declared: tuple | None = None) -> None:
        if ref.shape != new.shape:
            raise OnnxcompError(
                f"output '{self.name}': the models give different shapes {ref.shape} vs {new.shape}"
            )
        if ref.ndim == 0:
            ref, new = ref.reshape(1), new.reshape(1)
        if self.ab is None:
            self.axis = component_axis(ref.shape, declared)
        a, b = _by_component(ref, self.axis), _by_component(new, self.axis)  # [n, C, rest]
        if self.ab is None:
            self.components = a.shape[1]
            self.ab, self.aa, self.bb = (np.zeros(self.components) for _ in range(3))
        elif a.shape[1] != self.components:
            raise OnnxcompError(
                f"output '{self.name}': {a.shape[1]} components in a batch after "
                f"{self.components} in the first"
            )
        per = np.stack([(a * b).sum(-1), (a * a).sum(-1), (b * b).sum(-1)], axis=1)
        assert self.aa is not None and self.bb is not None
        self.ab += per[:, 0].sum(0)
        self.aa += per[:, 1].sum(0)
        self.bb += per[:, 2].sum(0)
        self.rows.append(per.astype(np.float32))
        self.global_cos.append(_cos(per[:, 0].sum(1), per[:, 1].sum(1), per[:, 2].sum(1)))

    @property
    def samples(self) -> int:
        return sum(r.shape[0] for r in self.rows)

    def cosines(self) -> np.ndarray:
        """Pooled cosine of every component (NaN for a negligible one)."""
        assert self.ab is not None and self.aa is not None and self.bb is not None
        cos = _cos(self.ab, self.aa, self.bb)
        energy = np.maximum(self.aa, self.bb)
        floor = NEGLIGIBLE_ENERGY * float(np.median(energy)) if energy.size else 0.0
        return np.where(energy <= floor, np.nan, cos)

    def worst(self) -> tuple[int, float]:
        """(index, cosine) of the worst component; (-1, 1.0) when all are negligible."""
        cos = self.cosines()
        if np.all(np.isnan(cos)):
            return -1, 1.0
        i = int(np.nanargmin(cos))
        return i, float(cos[i])

    def drops(self, component: int | None = None) -> np.ndarray:
        """Per-sample drops of one component (default: the worst); mean = 1 - cosine."""
        c = self.worst()[0] if component is None else component
        n = self.samples
        if c < 0 or n == 0:
            return np.zeros(n)
        assert self.aa is not None and self.bb is not None
        per = np.concatenate(self.rows).astype(np.float64)[:, :, c]  # [n, 3]
        A, B = float(self.aa[c]), float(self.bb[c])
        if A == 0.0 and B == 0.0:
            return np.zeros(n)
        if A == 0.0 or B == 0.0:
            return np.ones(n)  # one model is all zero there: orthogonal
        ab, aa, bb = per[:, 0], per[:, 1], per[:, 2]
        return n * 0.5 * np.maximum(aa / A + bb / B - 2.0 * ab / np.sqrt(A * B), 0.0)

    def global_cosine(self) -> float:
        """The old figure: mean per-sample cosine of the whole tensor (reported only)."""
        cos = np.concatenate(self.global_cos) if self.global_cos else np.ones(0)
        return float(cos.mean()) if cos.size else 1.0

    def negligible(self) -> int:
        return int(np.isnan(self.cosines()).sum()) if self.ab is not None else 0


def _by_component(x: np.ndarray, axis: int | None) -> np.ndarray:
    """``x`` as [samples, components, values] in float64."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if axis is None:
        return x.reshape(n, 1, -1)
    return np.moveaxis(x, axis, 1).reshape(n, x.shape[axis], -1)


def _cos(dot: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """Cosine from sums; two all-zero vectors are identical, one all-zero is orthogonal."""
    denom = np.sqrt(aa * bb)
    both = (aa == 0) & (bb == 0)
    cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(np.where(both, 1.0, cos), -1.0, 1.0)


@dataclass(frozen=True)
class ComponentSummary:
    """What a report says of one float output."""

    name: str
    axis: int | None
    components: int
    worst_index: int
    worst_cosine: float
    global_cosine: float
    negligible: int

    @property
    def label(self) -> str:
        if self.axis is None or self.worst_index < 0:
            return self.name
        return f"{self.name}[{', '.join([':'] * self.axis + [str(self.worst_index)])}]"


def summarize(stats: ComponentStats) -> ComponentSummary:
    i, cos = stats.worst()
    return ComponentSummary(
        stats.name, stats.axis, stats.components, i, cos, stats.global_cosine(),
        stats.negligible(),
    )  # fmt: skip
