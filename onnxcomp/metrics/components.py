"""Fidelity per output component: no part of an output can hide behind the rest.

One cosine over a whole output tensor is dominated by its largest values: a YOLO head
``[N, 4 + classes, anchors]`` is mostly box coordinates in pixels, and class scores
(0..1) that collapsed to nothing leave that cosine at 0.995. Here each *component* (one
slice along the output's feature axis: every row of a ``[N, C, A]`` head, every class
score, every hidden feature) gets its own relative error, pooled over samples and
positions, ``e = ||new - ref||^2 / ||ref||^2`` (capped at 1), and the output is judged
by its worst component. Unlike a cosine, the error sees a component that only shrank
(class scores scaled down below a threshold keep a cosine of 1.0).

The component axis is the smallest non-batch axis the model declares with a fixed size
> 1 (exporters leave batch, sequence and anchor counts symbolic, or they are the long
axes: ``[1, 84, 8400]`` -> 84 rows, ``[N, 40, 6625]`` with only 6625 fixed -> classes,
``[N, T, 384]`` -> features), else an axis declared 1 (a heatmap ``[N, 1, H/4, W/4]``
whose spatial sizes follow each image), else the channel axis of an image ([N, C, H, W])
or the last axis (a sequence length varies by batch).

Per-sample drops decompose the pooled error exactly: sample ``i``'s share is
``N * ||new_i - ref_i||^2 / ||ref||^2``, and their mean is ``e``, so the statistical
bound on a drop works on them as on any per-sample metric.
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
        single = [a for a in axes if declared[a] == 1]
        if single:  # the rest is symbolic: sizes that may change from batch to batch
            return single[0]
    sized = [a for a in axes if shape[a] > 1]
    if not sized:
        return None
    if len(shape) >= 4 and (1 in sized or sized == axes[-2:]):
        return 1  # ONNX images are [N, C, H, W]; a one-channel map is one component
    return sized[-1]  # features last ([N, T, D]); a YOLO head declares its sizes


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

    def _negligible(self) -> np.ndarray:
        assert self.aa is not None and self.bb is not None
        energy = np.maximum(self.aa, self.bb)
        floor = NEGLIGIBLE_ENERGY * float(np.median(energy)) if energy.size else 0.0
        return energy <= floor

    def cosines(self) -> np.ndarray:
        """Pooled cosine of every component (reported beside the error)."""
        assert self.ab is not None and self.aa is not None and self.bb is not None
        return _cos(self.ab, self.aa, self.bb)

    def errors(self) -> np.ndarray:
        """Pooled relative squared error of every component (NaN for a negligible one;
        uncapped, so comparisons still rank two broken models; drops cap it at 1)."""
        assert self.ab is not None and self.aa is not None and self.bb is not None
        sse = np.maximum(self.aa - 2.0 * self.ab + self.bb, 0.0)
        err = np.where(self.aa > 0, sse / np.where(self.aa > 0, self.aa, 1.0), np.inf)
        err = np.where((self.aa == 0) & (self.bb == 0), 0.0, err)
        return np.where(self._negligible(), np.nan, err)

    def worst(self) -> tuple[int, float]:
        """(index, error) of the worst component; (-1, 0.0) when all are negligible."""
        err = self.errors()
        if np.all(np.isnan(err)):
            return -1, 0.0
        i = int(np.nanargmax(err))
        return i, float(err[i])

    def drops(self, component: int | None = None) -> np.ndarray:
        """Per-sample drops of one component (default: the worst); their mean is its
        error."""
        c = self.worst()[0] if component is None else component
        n = self.samples
        if c < 0 or n == 0:
            return np.zeros(n)
        assert self.aa is not None
        per = np.concatenate(self.rows).astype(np.float64)[:, :, c]  # [n, 3]
        total = min(float(self.errors()[c]), 1.0)
        sse = np.maximum(per[:, 1] - 2.0 * per[:, 0] + per[:, 2], 0.0)
        if not total or not sse.sum():
            return np.full(n, total)
        return sse * (n * total / float(sse.sum()))  # mean = the (capped) pooled error

    def global_cosine(self) -> float:
        """The old figure: mean per-sample cosine of the whole tensor (reported only)."""
        cos = np.concatenate(self.global_cos) if self.global_cos else np.ones(0)
        return float(cos.mean()) if cos.size else 1.0

    def negligible(self) -> int:
        return int(self._negligible().sum()) if self.ab is not None else 0


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
    worst_error: float  # pooled relative squared error of the worst component (uncapped)
    worst_cosine: float  # that component's pooled cosine
    global_cosine: float
    negligible: int

    @property
    def label(self) -> str:
        if self.axis is None or self.worst_index < 0:
            return self.name
        return f"{self.name}[{', '.join([':'] * self.axis + [str(self.worst_index)])}]"


def summarize(stats: ComponentStats) -> ComponentSummary:
    i, err = stats.worst()
    cos = float(stats.cosines()[i]) if i >= 0 else 1.0
    return ComponentSummary(
        stats.name, stats.axis, stats.components, i, err, cos, stats.global_cosine(),
        stats.negligible(),
    )  # fmt: skip
