"""methods/channels/: channel segments, regrouped parts, the cost of a cut, the record."""

from __future__ import annotations

import numpy as np
from _models import mlp

from onnxcomp.methods.channels.channels import coalesce, local, shift, spread, width
from onnxcomp.methods.channels.regroup import part
from onnxcomp.methods.channels.removed import record_removed, removed_channels
from onnxcomp.methods.channels.slicing import cost, kept_features


def test_segments_coalesce_shift_and_measure() -> None:
    segs = coalesce(((0, 4), (4, 8), (20, 2)))  # (start, length) runs
    assert segs == ((0, 12), (20, 2)) and width(segs) == 14
    assert shift(segs, 3) == ((3, 12), (23, 2))
    assert width(part(segs, 0, 6)) == 6


def test_local_and_spread_map_kept_channels() -> None:
    kept = np.array([0, 2, 5])
    assert list(local(None, kept)) == [0, 2, 5]
    values = spread(None, np.array([1.0, 2.0, 3.0]), 3)
    assert values.shape == (3,)


def test_kept_features_expand_each_channel() -> None:
    assert list(kept_features(np.array([0, 2]), 3)) == [0, 1, 2, 6, 7, 8]
    assert list(kept_features(np.array([1, 3]), 1)) == [1, 3]


def test_cost_counts_weights() -> None:
    params, _ = cost(mlp())
    assert params >= 64 * 64 + 64 * 8


def test_removed_channels_keep_the_first_before() -> None:
    model = mlp()
    record_removed(model, {"mm1": (64, 48)})
    record_removed(model, {"mm1": (48, 32)})
    assert removed_channels(model) == {"mm1": [64, 32]}
