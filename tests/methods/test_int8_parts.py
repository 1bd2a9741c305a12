"""methods/int8/: the flow's report and SmoothQuant's statistics and scales."""

from __future__ import annotations

import numpy as np
from _models import data_for, mlp

from onnxcomp.graph.weights import find_weights
from onnxcomp.methods.int8 import smoothquant
from onnxcomp.methods.int8.measure_step import JOINED_BYTES, _joined
from onnxcomp.methods.int8.report import Int8Report
from onnxcomp.methods.int8.smoothquant import SmoothQuantPass, collect, smooth_scale
from onnxcomp.passes.channel_scale import scale_groups, weight_kn
from onnxcomp.passes.report import CompressReport


def test_report_is_plain_data() -> None:
    report = Int8Report("uint8", "x86", "minmax")
    assert report.as_dict()["activation_type"] == "uint8"


def test_smoothing_never_increases_the_int8_error() -> None:
    model = mlp()
    groups = [g for g in scale_groups(find_weights(model)) if g.x.name]
    stats = collect(model, groups, data_for(model))
    for group in groups:
        s, _alpha, before, after = smooth_scale(
            stats[group.name], [weight_kn(w) for w in group.weights]
        )
        assert s is None or after <= before


def test_pass_takes_the_pipeline_data() -> None:
    model = mlp()
    opened = []

    def data():
        opened.append(1)
        return data_for(model)

    SmoothQuantPass(data, lambda w: True, CompressReport())(model)
    assert opened == [1]


def test_alpha_search_finds_the_grids_best_alpha() -> None:
    """The ternary search over ALPHAS lands on the exhaustive minimum of a group whose
    activation has outlier channels (the error is unimodal in alpha)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 64)).astype(np.float32)
    x[:, :3] *= 30.0
    w = (rng.standard_normal((64, 32)) / 8).astype(np.float32)
    stats = smoothquant._Stats(64)
    stats.update(x)
    s, alpha, before, after = smooth_scale(stats, [w])
    assert s is not None and after < before
    amax_x, amax_w = np.abs(x).max(0), np.abs(w).max(1)

    def err(a: float) -> float:
        s = amax_x**a / amax_w ** (1 - a)
        return smoothquant.int8_error(stats, [w], s / np.sqrt(s.max() * s.min()))

    assert after == min(err(a) for a in smoothquant.ALPHAS) == err(alpha)


class _Input:
    def __init__(self, shape) -> None:
        self.name, self.shape = "x", shape


class _Session:
    def __init__(self, shape) -> None:
        self.shape = shape

    def get_inputs(self):
        return [_Input(self.shape)]


def test_fidelity_feeds_join_into_one_batch_only_when_the_batch_is_free() -> None:
    """Run-time ranges are judged on the widest batch; a fixed batch or large inputs
    keep the calibration batches."""
    feeds = [{"x": np.full((4, 8), i, np.float32)} for i in range(4)]
    joined = _joined(feeds, _Session(["N", 8]))
    assert len(joined) == 1 and joined[0]["x"].shape == (16, 8)
    assert np.array_equal(joined[0]["x"][4:8], feeds[1]["x"])
    assert _joined(feeds, _Session([4, 8])) is feeds
    big = [{"x": np.zeros((4, JOINED_BYTES // 8), np.float32)} for _ in range(4)]
    assert _joined(big, _Session(["N", "M"])) is big
