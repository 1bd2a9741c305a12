"""Distillation's samples: the calibration batches stacked into one array per input.

Samples of different shapes (text lines, captchas, sentences) are zero-padded to one
size, the one that keeps the most of them; the teacher and the student see the same
padded input, so matching them stays exact.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.io.data import DataSource


def collect(data: DataSource, names: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """The calibration samples stacked per input, and a note when they were padded or
    some left out. Samples of different shapes (text lines of different widths, captchas
    of different lengths, sentences) are padded with zeros at the end: the teacher and
    the student see the same padded input, so matching them stays exact, and zeros are
    what the recognizers' own batching pads (PaddleOCR) and what a token id and mask pad
    to. The padded size is the one that keeps the most samples while padding at most
    doubles their data: sentences of 12 to 128 tokens, mostly short, train the short
    ones padded to a common length rather than only the few of one length."""
    batches = [{n: np.asarray(b.feed[n]) for n in names} for b in data]
    if not names or not batches:
        raise OnnxcompError("--recover distill: the calibration data holds no sample")
    shapes = [tuple(b[n].shape[1:] for n in names) for b in batches]
    if len(set(shapes)) == 1:
        return {n: np.concatenate([b[n] for b in batches], axis=0) for n in names}, ""
    if len({len(s) for s in shapes}) != 1 or any(
        len({len(s[i]) for s in shapes}) != 1 for i in range(len(names))
    ):
        common = max(set(shapes), key=lambda s: (shapes.count(s), s))
        return _stacked(batches, names, [s == common for s in shapes], None, shapes)
    box = _box(batches, shapes)
    fits = [_fits(s, box) for s in shapes]
    return _stacked(batches, names, fits, box, shapes)


PAD_LIMIT = 2.0  # padded bytes over the samples' own bytes beyond which none are padded
Shapes = tuple[tuple[int, ...], ...]  # one sample's shape per input (batch axis left out)


def _fits(shape: Shapes, box: Shapes) -> bool:
    return all(d <= t for s, b in zip(shape, box, strict=True) for d, t in zip(s, b, strict=True))


def _box(batches: list[dict[str, np.ndarray]], shapes: list[Shapes]) -> Shapes:
    """The padded shape that keeps the most rows within PAD_LIMIT (each input's padded
    bytes at most that many times its own), the smaller of equals; candidates are every
    sample's shape and the largest of all (images whose heights and widths differ)."""
    rows = [len(next(iter(b.values()))) for b in batches]
    largest = tuple(
        tuple(max(d) for d in zip(*(s[i] for s in shapes), strict=True))
        for i in range(len(shapes[0]))
    )
    best: tuple[int, int, Shapes] | None = None
    for box in sorted({*shapes, largest}):
        fits = [_fits(s, box) for s in shapes]
        kept = sum(r for r, f in zip(rows, fits, strict=True) if f)
        own = [
            sum(int(np.prod(s[i])) * r for s, r, f in zip(shapes, rows, fits, strict=True) if f)
            for i in range(len(box))
        ]
        if any(kept * int(np.prod(b)) > PAD_LIMIT * o for b, o in zip(box, own, strict=True)):
            continue
        size = sum(int(np.prod(b)) for b in box)
        if best is None or (kept, -size) > (best[0], -best[1]):
            best = (kept, size, box)
    if best is None:  # every candidate pads too much: the most common shape alone
        return max(set(shapes), key=lambda s: (shapes.count(s), s))
    return best[2]


def _stacked(
    batches: list[dict[str, np.ndarray]],
    names: list[str],
    fits: list[bool],
    box: Shapes | None,
    shapes: list[Shapes],
) -> tuple[dict[str, np.ndarray], str]:
    kept = [b for b, f in zip(batches, fits, strict=True) if f]
    out = {}
    for i, n in enumerate(names):
        arrays = [b[n] for b in kept]
        top = box[i] if box is not None else arrays[0].shape[1:]
        stack = np.zeros((sum(len(a) for a in arrays), *top), arrays[0].dtype)
        at = 0
        for a in arrays:
            index = (slice(at, at + len(a)), *(slice(0, d) for d in a.shape[1:]))
            stack[index] = a
            at += len(a)
        out[n] = stack
    kinds = len({s for s, f in zip(shapes, fits, strict=True) if f})
    padded = ", zero-padded" if kinds > 1 else ""
    if len(kept) == len(batches):
        return out, f"{len(batches)} calibration batches ({kinds} shapes{padded})"
    what = f"{kinds} shapes{padded}" if kinds > 1 else "those of one shape"
    return out, f"{len(kept)} of {len(batches)} calibration batches ({what})"
