"""The teacher's outputs over the calibration samples, computed once by onnxruntime.

Stored samples first (a time-major output swapped), float32, in arrays allocated once
(each batch written in place, never concatenated); past ``MEMORY_BYTES`` in all, in a
memory map in an onnxcomp temp folder (io/tempdirs.py), so 1,000 samples of a
[40, 6625] sequence output (~1 GB) are on disk once and paged in by the batches that
read them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.io.tempdirs import make_temp_dir

MEMORY_BYTES = 256 << 20


class TeacherStore:
    """Allocates the output arrays (in memory or mapped); ``close`` removes the maps."""

    def __init__(self, limit: int = MEMORY_BYTES) -> None:
        self.limit = limit
        self.folder: Path | None = None
        self.mapped = 0  # bytes held in memory maps
        self._count = 0

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes <= self.limit:
            self.limit -= nbytes
            return np.empty(shape, dtype)
        if self.folder is None:
            self.folder = make_temp_dir(Path(tempfile.gettempdir()))
        self._count += 1
        self.mapped += nbytes
        path = self.folder / f"teacher{self._count}.f32"
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    def run(
        self,
        session: Any,
        feeds: dict[str, np.ndarray],
        batch: int,
        names: list[str] | None,
        time_major: set[int] | None = None,
    ) -> list[np.ndarray]:
        """``session``'s outputs (``names``, or all) over every sample, float outputs as
        float32, samples first: the outputs numbered in ``time_major`` come [T, N, ...]
        and are stored [N, T, ...] (``batch_axes`` finds them)."""
        swap = time_major or set()
        n = len(next(iter(feeds.values())))
        arrays: list[np.ndarray] | None = None
        for start in range(0, n, batch):
            part = {k: v[start : start + batch] for k, v in feeds.items()}
            outs = [np.asarray(o) for o in session.run(names, part)]
            outs = [np.swapaxes(o, 0, 1) if i in swap else o for i, o in enumerate(outs)]
            size = len(next(iter(part.values())))
            for i, o in enumerate(outs):
                if o.ndim and o.shape[0] != size:
                    label = f"'{names[i]}'" if names is not None else f"#{i}"
                    raise OnnxcompError(
                        f"--recover distill: output {label} has no sample axis first or "
                        f"second (shape {list(o.shape)} for {size} samples): distillation "
                        "matches outputs sample by sample"
                    )
            if arrays is None:
                arrays = [
                    self.allocate(
                        (n, *o.shape[1:]),
                        np.dtype(np.float32) if o.dtype.kind == "f" else o.dtype,
                    )
                    for o in outs
                ]
            for array, out in zip(arrays, outs, strict=True):
                array[start : start + len(out)] = out
        assert arrays is not None, "no samples"
        return arrays

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def batch_axes(
    session: Any, feeds: dict[str, np.ndarray], names: list[str] | None, fixed: int | None
) -> set[int]:
    """The outputs whose samples are on axis 1 ([T, N, C], as a CTC recognizer exported
    time-major): the axis that grows from a run of one sample to a run of two. Shapes
    alone cannot tell when the sequence happens to be as long as the batch; a model of
    a fixed batch can only be read by them (axis 0 not the batch, axis 1 is)."""
    if fixed is not None:
        outs = session.run(names, {k: v[:fixed] for k, v in feeds.items()})
        shapes = [np.shape(o) for o in outs]
        return {i for i, s in enumerate(shapes) if len(s) > 1 and s[0] != fixed == s[1]}
    if len(next(iter(feeds.values()))) < 2:
        return set()
    one = session.run(names, {k: v[:1] for k, v in feeds.items()})
    two = session.run(names, {k: v[:2] for k, v in feeds.items()})
    out = set()
    for i, (a, b) in enumerate(zip(one, two, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        grew = [ax for ax in range(min(a.ndim, b.ndim)) if a.shape[ax] == 1 and b.shape[ax] == 2]
        if grew and grew[0] == 1 and a.ndim == b.ndim and a.shape[0] == b.shape[0]:
            out.add(i)
    return out
