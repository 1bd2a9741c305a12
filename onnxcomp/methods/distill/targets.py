"""What the student matches, per output, from the task (no torch here).

- class scores ([N, C], [N, T, C] per step, a segmenter's [N, C, H, W] per pixel): Hinton's
  KL at temperature T on softmax (probabilities read as log-probabilities, a Softmax's
  input as the logits);
- a YOLO-style detector head: per-component normalized error on the box fields, binary KL
  at T on the class-score (sigmoid) channels;
- embeddings: cosine to the teacher's vector, plus a contrastive term over the batch
  (each student vector nearest its own teacher vector: the ranking a search reads);
  token states [N, T, D] fed a mask (as the embed Judge finds it): each real token's
  cosine, plus both terms on the mask-weighted means, padding left free;
- everything else (regression, thresholds, unknown): per-component normalized MSE, each
  component divided by its spread in the teacher so a small channel counts as much as a
  large one;
- ``--distill-hint NAME``: an intermediate tensor of both graphs, normalized MSE.

``--distill-loss OUTPUT=kl|mse|cosine`` overrides the choice for one output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics.boxes import yolo_axis
from onnxcomp.metrics.embed import token_weights
from onnxcomp.options import DISTILL_LOSSES

TEMPERATURE = 2.0
KINDS = DISTILL_LOSSES
CLASS_TASKS = ("classify", "sequence", "ctc", "segment")


@dataclass
class Target:
    name: str  # the graph output (or hint tensor)
    kind: str  # "kl", "bkl" (binary KL), "mse", "cosine", "hint"
    teacher: np.ndarray  # [N, ...] float32 (a memory map for big outputs)
    axis: int = -1  # kl/bkl: the class axis; mse: the component axis
    channels: tuple[int, int] | None = None  # a range of ``axis`` (detector heads)
    logits_of: str | None = None  # the student value holding logits (a Softmax input)
    probabilities: bool = False  # the output is probabilities: KL reads their log
    spread: np.ndarray | None = None  # mse/hint: per-component spread (broadcast shape)
    blank: int | None = None  # kl on a CTC sequence: steps weighted by the teacher emitting
    time_major: bool = False  # the student's value is [T, N, ...] (the teacher's is stored N first)
    weights: np.ndarray | None = None  # cosine on token states: [N, T] weights of the real tokens

    def describe(self) -> str:
        part = f"[{self.channels[0]}:{self.channels[1]}]" if self.channels else ""
        what = {
            "kl": f"KL at T={TEMPERATURE:g}", "bkl": f"binary KL at T={TEMPERATURE:g}",
            "mse": "per-component normalized MSE", "cosine": "cosine + batch contrastive",
            "hint": "hint, normalized MSE",
        }[self.kind]  # fmt: skip
        if self.weights is not None:
            what = "real tokens' cosine + masked mean's cosine + batch contrastive"
        if self.blank is not None:
            what += f", steps weighted by the teacher's emitting (blank {self.blank})"
        return f"'{self.name}'{part}: {what}"


def parse_overrides(specs: tuple[str, ...]) -> dict[str, str]:
    """``OUTPUT=kl|mse|cosine`` items, checked."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, kind = str(spec).rpartition("=")
        if not sep or not name or kind not in KINDS:
            raise OnnxcompError(f"--distill-loss takes OUTPUT=kl|mse|cosine, got {spec!r}")
        out[name] = kind
    return out


def is_probabilities(a: np.ndarray, axis: int = -1) -> bool:
    if not a.size:
        return False
    sample = np.asarray(a[: min(len(a), 64)])
    return bool(sample.min() >= 0 and np.allclose(sample.sum(axis=axis), 1.0, atol=1e-3))


def spread_of(teacher: np.ndarray, axis: int | None) -> np.ndarray:
    """Per-component standard deviation along ``axis`` (over every other axis), floored."""
    a = np.asarray(teacher[: min(len(teacher), 4096)], np.float64)
    others = tuple(i for i in range(a.ndim) if axis is None or i != axis % a.ndim)
    spread = a.std(axis=others, keepdims=True)
    floor = max(float(spread.max()) * 1e-6, 1e-12)
    return np.maximum(spread, floor).astype(np.float32)


def make_target(
    name: str, kind: str, teacher: np.ndarray, softmax_input: str | None = None, axis: int = -1,
    *, in_place: bool = False,
) -> Target:  # fmt: skip
    """One target: KL reads probabilities as log-probabilities (with ``in_place``, the
    teacher's own float32 array is converted: no second copy of a big output)."""
    if kind == "kl":
        probs = is_probabilities(teacher, axis)
        if probs and in_place and teacher.dtype == np.float32:
            np.log(np.clip(teacher, 1e-12, None, out=teacher), out=teacher)  # no second copy
        elif probs:
            teacher = np.log(np.clip(teacher, 1e-12, None)).astype(np.float32)
        return Target(name, kind, teacher, axis, None, softmax_input, probs)
    if kind == "cosine":
        return Target(name, kind, teacher)
    comp = 1 if teacher.ndim >= 2 else None
    return Target(name, kind, teacher, axis=comp or 0, spread=spread_of(teacher, comp))


def choose(
    arrays: dict[str, np.ndarray],
    task: str | None,
    softmax_inputs: dict[str, str],
    overrides: dict[str, str],
    *,
    in_place: bool = False,
    blank: int = 0,
    feed: dict[str, np.ndarray] | None = None,
    mask: str | None = None,
) -> list[Target]:
    """Targets for the float outputs ``arrays`` (teacher values), in order; ``in_place``:
    the arrays are ours to convert (make_target); ``feed``: the samples' inputs, where
    an embedding's token states find their mask (``mask``: the input, else found as
    the embed Judge finds it)."""
    unknown = sorted(set(overrides) - set(arrays))
    if unknown:
        raise OnnxcompError(
            f"--distill-loss names no float output of the model: {', '.join(unknown)} "
            f"(outputs: {', '.join(arrays)})"
        )
    targets: list[Target] = []
    for name, a in arrays.items():
        logits = softmax_inputs.get(name)
        kind = overrides.get(name)
        if kind is not None:
            softmax = logits if kind == "kl" else None
            targets.append(make_target(name, kind, a, softmax, in_place=in_place))
        elif task == "detect" and yolo_axis(a.shape) is not None:
            targets += _detector(name, a)
        elif task == "embed":
            target = make_target(name, "cosine", a)
            if a.ndim == 3 and feed:
                weights = token_weights(a.shape[0], a.shape[1], feed, mask)
                target.weights = None if weights is None else weights.astype(np.float32)
            targets.append(target)
        elif _scores(a, task):
            axis = 1 if task == "segment" and a.ndim == 4 else -1
            target = make_target(name, "kl", a, logits, axis, in_place=in_place)
            if task in ("sequence", "ctc") and a.ndim == 3:
                target.blank = blank
            targets.append(target)
        else:
            targets.append(make_target(name, "mse", a))
    if not targets:
        raise OnnxcompError("--recover distill: the model has no float output to match")
    return targets


def _scores(a: np.ndarray, task: str | None) -> bool:
    """Class scores: the task says so, or (no task) [N, C] scores or [N, T, C] per-step
    probabilities."""
    if task in CLASS_TASKS:
        return a.ndim >= 2 and a.shape[-1 if task != "segment" or a.ndim != 4 else 1] > 1
    if task is not None:
        return False
    if a.ndim == 2:
        return a.shape[1] > 1
    return a.ndim == 3 and min(a.shape[1:]) > 1 and is_probabilities(a)


def _detector(name: str, a: np.ndarray) -> list[Target]:
    """A YOLO head [N, 4 + C, A] (v8) or [N, A, 5 + C] (v5): boxes by normalized error,
    scores (objectness and classes) by binary KL."""
    axis = yolo_axis(a.shape)
    assert axis is not None
    fields = a.shape[axis]
    spread = spread_of(a, axis)
    boxes = Target(name, "mse", a, axis, (0, 4), spread=_slice(spread, axis, 0, 4))
    scores = Target(name, "bkl", a, axis, (4, fields))
    return [boxes, scores]


def _slice(a: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, stop)
    return a[tuple(index)]
