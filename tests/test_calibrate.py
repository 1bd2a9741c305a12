"""Streaming calibration: histograms merge exactly, every method, bounded memory, data formats."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import int8_conv_net as conv_net
from onnx import TensorProto, helper
from onnx_ir.passes.common import ShapeInferencePass

from onnxcomp.io.data import input_specs, open_data
from onnxcomp.methods.int8.calibrate import (
    NONNEGATIVE_OPS,
    Statistics,
    TensorStats,
    _reducible,
    collect,
)
from onnxcomp.numerics.histogram import (
    Histogram,
    entropy_range,
    fitting_exp,
    mse_range,
    percentile_range,
)
from onnxcomp.numerics.scales import activation_params, dequantize, quantize, quantize_bias


def _parts(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    specs = [(0.01, 0.0), (1.0, 3.0), (10.0, -5.0), (0.1, 100.0), (0.0, 7.0)]
    return [(rng.standard_normal(500) * s + o).astype(np.float32) for s, o in specs]


def test_histogram_updates_equal_one_big_histogram() -> None:
    parts = _parts()
    streamed = Histogram(256)
    for p in parts:
        streamed.update(p)
    big = Histogram(256)
    big.update(np.concatenate(parts))
    assert (streamed.exp, streamed.offset) == (big.exp, big.offset)
    np.testing.assert_array_equal(streamed.counts, big.counts)
    assert streamed.total == sum(p.size for p in parts)


def test_histogram_merge_equals_one_big_histogram_in_any_order() -> None:
    parts = _parts(1)
    big = Histogram(128)
    big.update(np.concatenate(parts))
    a, b = Histogram(128), Histogram(128)
    for p in parts[::2]:
        a.update(p)
    for p in parts[1::2]:
        b.update(p)
    b.merge(a)
    np.testing.assert_array_equal(b.counts, big.counts)
    assert (b.min, b.max, b.offset) == (big.min, big.max, big.offset)


def test_histogram_grid_and_edges() -> None:
    h = Histogram(64)
    h.update(np.array([0.0, 0.0, 0.0], np.float32))
    assert h.total == 3 and h.min == h.max == 0.0
    h.update(np.array([np.nan, np.inf, 1.0], np.float32))  # non-finite values are skipped
    assert h.total == 4
    edges = h.edges()
    assert edges[0] <= 0.0 and edges[-1] > 1.0 and len(edges) == len(h.counts) + 1
    assert len(h.counts) <= 64
    assert fitting_exp(-1.0, 1.0, 64) <= fitting_exp(-2.0, 2.0, 64)


def test_range_methods_clip_outliers_and_stay_inside_minmax() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50_000).astype(np.float32)
    x[:5] = 40.0  # outliers
    h = Histogram()
    h.update(x)
    for lo, hi in (percentile_range(h, 99.9), entropy_range(h)):
        assert h.min <= lo < 0 < hi <= h.max
        assert hi < 20.0  # the outliers were clipped
    lo, hi = percentile_range(h, 100.0)
    assert hi == pytest.approx(40.0, rel=0.05)
    # mse trades clipping error against rounding error: long tails get clipped
    heavy = Histogram()
    heavy.update(rng.laplace(size=50_000).astype(np.float32))
    lo, hi = mse_range(heavy)
    assert heavy.min < lo < 0 < hi < heavy.max


def test_activation_params_zero_point_and_saturation() -> None:
    scale, zero = activation_params(0.0, 6.0, "uint8")
    assert zero == 0 and scale == pytest.approx(6.0 / 255)
    scale, zero = activation_params(0.0, 6.0, "int8")
    assert zero == -128
    scale, zero = activation_params(-1.0, 3.0, "uint8")
    assert 0 < zero < 255
    x = np.array([-1.0, 0.0, 3.0, 100.0], np.float32)
    q = quantize(x, scale, zero, qmin=0, qmax=255, dtype=np.uint8)
    assert q[-1] == 255  # saturates
    back = dequantize(q, scale, zero)
    assert back[1] == 0.0  # zero is exact
    np.testing.assert_allclose(back[:3], x[:3], atol=scale)
    scale, zero = activation_params(0.0, 0.0, "uint8")
    assert scale == 1.0  # never a zero scale
    qb, sb = quantize_bias(
        np.array([0.5, -0.25], np.float32), np.float32(0.1), np.array([0.5, 0.25])
    )
    assert qb.dtype == np.int32
    np.testing.assert_allclose(qb * sb, [0.5, -0.25], atol=1e-6)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_every_method_on_a_small_model(method: str) -> None:
    model = ir.from_proto(conv_net())
    data = np.random.default_rng(0).random((12, 3, 16, 16)).astype(np.float32)
    source = open_data([{"x": data[i : i + 3]} for i in range(0, 12, 3)], input_specs(model))
    stats = collect(model, ["r0", "c2", "logits"], source, method=method, progress=False)
    assert stats.samples == 12 and stats.batches == 4
    ranges = stats.ranges(method)
    assert set(ranges) == {"r0", "c2", "logits"}
    lo, hi = ranges["r0"]
    assert lo >= 0.0 and hi > 0.0  # a Relu output
    for name, (lo, hi) in ranges.items():
        t = stats.tensors[name]
        assert t.min <= lo <= hi <= t.max


def test_minmax_reduced_in_the_graph_equals_the_fetched_extremes() -> None:
    # minmax asks onnxruntime for ReduceMin/ReduceMax; the histogram methods fetch the
    # tensors and keep exact min/max beside the bins: both must agree bit for bit.
    model = ir.from_proto(conv_net())
    ShapeInferencePass()(model)
    data = np.random.default_rng(1).standard_normal((10, 3, 16, 16)).astype(np.float32)
    feeds = [{"x": data[i : i + 4]} for i in range(0, 10, 4)]  # a short last batch
    names = ["x", "c0", "r0", "s", "g", "logits"]
    assert _reducible(model, names) == set(names)
    reduced = collect(model, names, open_data(feeds, input_specs(model)), progress=False)
    fetched = collect(
        model, names, open_data(feeds, input_specs(model)), method="mse", progress=False
    )
    assert reduced.samples == fetched.samples == 10
    producers = {n.outputs[0].name: n.op_type for n in model.graph}
    for name in names:
        a, b = reduced.tensors[name], fetched.tensors[name]
        assert a.max == b.max and a.hist is None, name
        if producers.get(name) in NONNEGATIVE_OPS:
            # no ReduceMin: the minimum is taken as 0, and the quantization range
            # (widened to hold 0) is the same
            assert a.min == 0.0 <= b.min, name
            for dtype in ("uint8", "int8"):
                assert activation_params(a.min, a.max, dtype) == activation_params(
                    b.min, b.max, dtype
                )
        else:
            assert a.min == b.min, name
    assert producers["r0"] in NONNEGATIVE_OPS and producers["s"] not in NONNEGATIVE_OPS
    assert reduced.tensors["x"].min == float(data.min())


def test_minmax_skips_infinities() -> None:
    # Log of a Relu output is -inf at every zero: the range is that of the finite values.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Log", ["r"], ["y"])]
    proto = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]
    )
    model = ir.from_proto(proto)
    ShapeInferencePass()(model)  # dtypes tell which tensors can be reduced in the graph
    data = np.array([[-1.0, 1.0, 2.0, 4.0], [0.5, -3.0, 8.0, 1.0]], np.float32)
    stats = collect(model, ["y"], open_data([{"x": data}], input_specs(model)), progress=False)
    assert stats.tensors["y"].min == pytest.approx(np.log(0.5))
    assert stats.tensors["y"].max == pytest.approx(np.log(8.0))


def test_statistics_size_does_not_grow_with_samples() -> None:
    model = ir.from_proto(conv_net())
    rng = np.random.default_rng(0)
    sizes = []
    for n in (2, 40):
        feeds = [{"x": rng.random((1, 3, 16, 16)).astype(np.float32) * (i + 1)} for i in range(n)]
        source = open_data(feeds, input_specs(model))
        stats = collect(model, ["r0", "r1", "c2"], source, method="entropy", progress=False)
        sizes.append(stats.nbytes)
    # a fixed ceiling per tensor (max_bins counters + min/max), whatever the sample count
    ceiling = 3 * (16 + 2048 * 8)
    assert all(size <= ceiling for size in sizes)
    hist = Histogram(256)
    for i in range(100):  # a range that keeps growing never grows the storage
        hist.update(np.array([-(2.0**i) * 1e-6, 2.0 ** (i / 3)]))
        assert len(hist.counts) <= 256


def test_statistics_merge_equals_single_pass() -> None:
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((2, 50)).astype(np.float32) * (i + 1) for i in range(6)]
    one = Statistics.empty(["t"], histograms=True, bins=128)
    for a in arrays:
        one.update({"t": a}, 2)
    left = Statistics.empty(["t"], histograms=True, bins=128)
    right = Statistics.empty(["t"], histograms=True, bins=128)
    for a in arrays[:3]:
        left.update({"t": a}, 2)
    for a in arrays[3:]:
        right.update({"t": a}, 2)
    left.merge(right)
    assert left.samples == one.samples
    assert left.ranges("percentile", 99.0) == one.ranges("percentile", 99.0)
    np.testing.assert_array_equal(left.tensors["t"].hist.counts, one.tensors["t"].hist.counts)
    assert TensorStats().range() == (0.0, 0.0)


def test_three_data_formats_and_varying_lengths(tmp_path) -> None:
    model = ir.from_proto(conv_net(size="dynamic"))
    rng = np.random.default_rng(0)
    npz = tmp_path / "calib.npz"
    np.savez(npz, x=rng.random((5, 3, 16, 16)).astype(np.float32))
    folder = tmp_path / "feeds"
    folder.mkdir()
    for i, size in enumerate((16, 20, 12)):  # spatial sizes differ between feeds
        np.savez(folder / f"{i}.npz", x=rng.random((1, 3, size, size)).astype(np.float32))
    test_data = tmp_path / "onnx_data" / "test_data_set_0"
    test_data.mkdir(parents=True)
    tensor = onnx.numpy_helper.from_array(rng.random((2, 3, 16, 16)).astype(np.float32), "x")
    (test_data / "input_0.pb").write_bytes(tensor.SerializeToString())
    for source, samples in ((npz, 5), (folder, 3), (tmp_path / "onnx_data", 2)):
        data = open_data(source, input_specs(model))
        stats = collect(model, ["r0", "logits"], data, method="percentile", progress=False)
        assert stats.samples == samples
        assert stats.tensors["r0"].seen
