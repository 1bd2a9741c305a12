"""Streaming X^T X of a layer's input, and im2col for convolutions.

GPTQ and SparseGPT only need H = X^T X (K x K for K input features), never X itself, so
each calibration batch adds its share and is dropped. A convolution is a matrix product
over unfolded patches (im2col); the patches are unfolded chunk by chunk to bound memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Upper bound on the elements of one unfolded chunk (float64: 8 bytes each).
CHUNK_ELEMENTS = 1 << 22


class HessianAccumulator:
    """Running sum of X^T X (float64) over rows of X with ``features`` columns."""

    def __init__(self, features: int) -> None:
        self.sum = np.zeros((features, features), np.float64)
        self.rows = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, self.sum.shape[0])
        self.sum += x.T @ x
        self.rows += x.shape[0]

    @property
    def matrix(self) -> np.ndarray:
        """The mean X^T X / rows: same minimiser, numbers independent of data size."""
        return self.sum / max(self.rows, 1)


def conv_pads(
    auto_pad: str,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
) -> list[int]:
    """Explicit ONNX pads [b1, b2, ..., e1, e2, ...] for any ``auto_pad`` setting."""
    n = len(kernel)
    if auto_pad in ("", "NOTSET"):
        return list(pads) if pads else [0] * (2 * n)
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin + end


def im2col(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    groups: int = 1,
) -> Iterator[list[np.ndarray]]:
    """Chunks of patch rows per group: each a list of [rows, C/groups * prod(kernel)].

    The column order is (channel, k1, k2, ...), the order of Conv weight[o].ravel(),
    so patches @ weight.reshape(O, -1).T is the convolution's output.
    """
    n_sp = len(kernel)
    width = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    pad_width = [(0, 0), (0, 0)] + [(pads[i], pads[i + n_sp]) for i in range(n_sp)]
    channels = x.shape[1]
    per_group = channels // groups
    features = per_group * int(np.prod(kernel))
    per_sample = features * groups * max(_out_count(x.shape[2:], width, strides, pads), 1)
    step = max(1, CHUNK_ELEMENTS // max(per_sample, 1))
    axes = tuple(range(2, 2 + n_sp))
    for start in range(0, x.shape[0], step):
        xp = np.pad(x[start : start + step], pad_width)
        win = sliding_window_view(xp, width, axis=axes)
        sel = (slice(None), slice(None))
        sel += tuple(slice(None, None, s) for s in strides)
        sel += tuple(slice(None, None, d) for d in dilations)
        win = win[sel]  # [N, C, out..., k...]
        # -> [N, out..., C, k...]; rows are (sample, position), columns (channel, kernel)
        order = (0, *range(2, 2 + n_sp), 1, *range(2 + n_sp, 2 + 2 * n_sp))
        win = win.transpose(order)
        chunk = []
        tail = (slice(None),) * n_sp
        for g in range(groups):
            index: tuple[Any, ...] = (Ellipsis, slice(g * per_group, (g + 1) * per_group), *tail)
            chunk.append(win[index].reshape(-1, features))
        yield chunk


def _out_count(
    spatial: Sequence[int], width: Sequence[int], strides: Sequence[int], pads: Sequence[int]
) -> int:
    n_sp = len(width)
    count = 1
    for i, (size, w, s) in enumerate(zip(spatial, width, strides, strict=True)):
        count *= max((size + pads[i] + pads[i + n_sp] - w) // s + 1, 0)
    return count
