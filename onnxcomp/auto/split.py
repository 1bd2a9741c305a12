"""Split data into a search part and a held-back verification part, written as .npz folders.

auto measures trials on the search part and judges its finalists on the verification
part, which the search never sees. The split is seeded and, when every sample has one
label, stratified by label (each class keeps its share on both sides). Samples are the
rows of each batch (axis 0); a model input with a fixed batch dimension > 1 makes each
batch one indivisible unit instead. The parts are written as folders of .npz files so
worker processes open them by path like any other data.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxcomp.errors import OnnxcompError
from onnxcomp.io.data import Batch, InputSpec, open_data

ROWS_PER_FILE = 64


@dataclass
class Split:
    search: str
    verify: str
    search_samples: int
    verify_samples: int
    stratified: bool


def _units(batches: list[Batch], specs: list[InputSpec]) -> list[Batch]:
    """One Batch per sample (or per batch when the model's batch size is fixed)."""
    fixed = any((s.fixed_batch or 1) > 1 for s in specs)
    units: list[Batch] = []
    for b in batches:
        sizes = {v.shape[0] if v.ndim else 1 for v in b.feed.values()}
        rows = sizes.pop() if len(sizes) == 1 else 0
        lab = None if b.labels is None else np.asarray(b.labels).reshape(-1)
        if not fixed and rows > 1 and lab is not None and lab.shape[0] != rows:
            raise OnnxcompError(
                f"labels: {rows} samples for {lab.shape[0]} labels "
                "(the labels array needs one label per sample)"
            )
        if fixed or rows <= 1:
            units.append(b)
            continue
        for i in range(rows):
            feed = {k: v[i : i + 1] for k, v in b.feed.items()}
            units.append(Batch(feed, None if lab is None else lab[i : i + 1]))
    return units


def _pick_verify(
    labels: list[Any] | None, n: int, fraction: float, seed: int, at_least: int = 0
) -> np.ndarray:
    """Indexes held back: ``fraction`` of each class (of all, without labels), >= 1 each
    side; topped up at random to ``at_least`` when rounding per class fell short."""
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.arange(n)]
    else:
        keys = sorted(set(labels), key=repr)
        groups = [np.array([i for i, y in enumerate(labels) if y == k]) for k in keys]
    chosen: list[int] = []
    for g in groups:
        take = round(fraction * len(g))
        chosen += rng.permutation(g)[:take].tolist()
    if not chosen:  # small data: hold back one sample at least
        chosen = [int(rng.integers(n))]
    if len(chosen) < at_least:
        taken = set(chosen)
        rest = rng.permutation([i for i in range(n) if i not in taken])
        chosen += rest[: at_least - len(chosen)].tolist()
    if len(chosen) >= n:
        chosen = chosen[: n - 1]
    return np.array(sorted(chosen), dtype=np.int64)


def _write(units: list[Batch], folder: Path, labels: str | None, join: bool = True) -> None:
    """Consecutive units whose arrays share shapes (beyond axis 0) go into one file;
    ``join=False`` (a model with a fixed batch size) keeps one unit per file, since a
    folder's file is one feed."""
    folder.mkdir(parents=True, exist_ok=True)
    groups: list[list[Batch]] = []
    for u in units:
        shape = {k: (v.shape[1:], v.dtype) for k, v in u.feed.items()}
        last = groups[-1] if groups else None
        if (
            join
            and last is not None
            and len(last) < ROWS_PER_FILE
            and shape == {k: (v.shape[1:], v.dtype) for k, v in last[0].feed.items()}
            and all(v.ndim for v in u.feed.values())
        ):
            last.append(u)
        else:
            groups.append([u])
    for i, g in enumerate(groups):
        arrays: dict[str, Any] = {k: np.concatenate([u.feed[k] for u in g]) for k in g[0].feed}
        if labels is not None and g[0].labels is not None:
            arrays[labels] = np.concatenate([np.asarray(u.labels).reshape(-1) for u in g])
        np.savez(folder / f"part_{i:05d}.npz", **arrays)


def split_data(
    data: Any,
    specs: list[InputSpec],
    folder: str | os.PathLike,
    *,
    labels: str | None = None,
    fraction: float = 1 / 3,
    seed: int = 0,
    at_least: int = 0,
) -> Split:
    """Write ``folder``/search and ``folder``/verify; the verify part holds ``fraction``
    (of each class), and ``at_least`` samples (units) when the data has them."""
    if not 0.0 < fraction < 1.0:
        raise OnnxcompError(f"--verify-fraction must be in (0, 1), got {fraction}")
    units = _units(list(open_data(data, specs, labels=labels)), specs)
    if len(units) < 2:
        raise OnnxcompError(
            f"cannot hold back verification data from {len(units)} sample(s): "
            "give more data or --verify DATA"
        )
    unit_labels = None
    if all(u.labels is not None and np.asarray(u.labels).size == 1 for u in units):
        unit_labels = [np.asarray(u.labels).reshape(-1)[0].item() for u in units]
    at_least = min(at_least, len(units) - 1)
    fraction = max(fraction, at_least / len(units))
    held = set(_pick_verify(unit_labels, len(units), fraction, seed, at_least).tolist())
    root = Path(folder)
    shutil.rmtree(root, ignore_errors=True)  # a second split replaces the first
    search = [u for i, u in enumerate(units) if i not in held]
    verify = [u for i, u in enumerate(units) if i in held]
    join = not any(s.fixed_batch is not None for s in specs)
    _write(search, root / "search", labels, join)
    _write(verify, root / "verify", labels, join)

    def count(us: list[Batch]) -> int:
        return sum(u.size for u in us)

    return Split(
        str(root / "search"), str(root / "verify"), count(search), count(verify),
        unit_labels is not None,
    )  # fmt: skip
