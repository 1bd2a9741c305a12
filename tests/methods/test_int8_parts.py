"""methods/int8/: the flow's report and SmoothQuant's statistics and scales."""

from __future__ import annotations

from _models import data_for, mlp

from onnxcomp.graph.weights import find_weights
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
