"""The sparsity cut by selection (np.partition) picks exactly the elements a stable
argsort picked: the same count, ties broken by element order, per tensor and global."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcomp.methods.prune.magnitude import _global_masks, sparsity_mask


def _reference(arrays: list[np.ndarray], sparsity: float) -> np.ndarray:
    flat = np.concatenate([np.abs(a).ravel() for a in arrays])
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(flat, kind="stable")[: round(sparsity * flat.size)]] = True
    return mask


@pytest.mark.parametrize("seed", range(40))
def test_selection_matches_stable_argsort(seed):
    rng = np.random.default_rng(seed)
    arrays = []
    for _ in range(rng.integers(1, 4)):
        shape = tuple(int(d) for d in rng.integers(1, 7, size=rng.integers(0, 3)))
        if seed % 2:  # many ties
            arrays.append(rng.integers(-3, 4, size=shape).astype(np.float32))
        else:
            arrays.append(rng.standard_normal(shape).astype(np.float32))
    sparsity = float(rng.random() * 0.99)
    got = np.concatenate([m.ravel() for m in _global_masks(arrays, sparsity)])
    assert np.array_equal(got, _reference(arrays, sparsity))
    single = sparsity_mask(arrays[0], sparsity)
    assert single.shape == arrays[0].shape
    assert np.array_equal(single.ravel(), _reference(arrays[:1], sparsity))
