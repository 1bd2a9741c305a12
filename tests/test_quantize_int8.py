"""Full int8: placement rules, fused kernels in onnxruntime, models quantize_static fails on."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from model_builders import int8_conv_net as conv_net
from model_builders import transformer
from onnx import TensorProto, helper

from onnxcomp import CompressOptions, compress, compress_model
from onnxcomp.methods.int8.flow import prepare_int8, resolve_activation_type
from onnxcomp.methods.int8.measure_step import Bench, _settled
from onnxcomp.methods.int8.placement import plan_qdq
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass


def _run(path_or_proto, feed):
    src = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feed)


def _fused_ops(path: str, tmp_path) -> collections.Counter:
    """Op types of the graph onnxruntime actually runs."""
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    return collections.Counter(n.op_type for n in optimized.graph.node)


def _compress(tmp_path, proto, calib, **kw):
    """Placement is deterministic with measure=False (timing decides nothing)."""
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(proto, src)
    kw.setdefault("measure", False)
    result = compress(src, out, quantize="int8", calib=calib, progress=False, **kw)
    return str(out), result


def _plan(proto, **kw):
    model = ir.from_proto(proto)
    prepare_int8(model)
    QuantizeWeightsPass()(model)
    return plan_qdq(model, **kw)


def _images(n=16, size=16, seed=0):
    return np.random.default_rng(seed).random((n, 3, size, size)).astype(np.float32)


def test_conv_net_runs_fused_int8_kernels(tmp_path) -> None:
    x = _images()
    path, result = _compress(tmp_path, conv_net(), [{"x": x[i : i + 4]} for i in range(0, 16, 4)])
    ops = _fused_ops(path, tmp_path)
    assert ops["QLinearConv"] == 3 and ops["QGemm"] == 1 and ops["QLinearAdd"] == 1
    assert ops["QLinearGlobalAveragePool"] == 1
    assert ops["Relu"] == 0 and ops["Conv"] == 0  # Relu folded into the zero point
    assert ops["Softmax"] == 1  # the graph's tail stays float
    model = onnx.load(path)
    biases = [t for t in model.graph.initializer if t.data_type == TensorProto.INT32]
    assert len(biases) >= 3  # conv and gemm biases as int32
    ref, got = _run(conv_net(), {"x": x})[0], _run(path, {"x": x})[0]
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.9
    acts = result.activations
    assert acts["activation_type"] == resolve_activation_type("auto")[0]
    assert acts["quantized_ops"]["Conv"] == 3
    assert acts["kept_float"]["softmax"]
    assert acts["latency_ratio"] is None  # not measured


def test_placement_rules_for_a_transformer() -> None:
    plan = _plan(transformer())
    quantized = {n.name for n in plan.nodes}
    ops = collections.Counter(n.op_type for n in plan.nodes)
    assert ops["MatMul"] >= 12  # the projections and both attention products
    # LayerNorm chain, Softmax and everything reading a float tensor stay float
    for name in quantized:
        assert "_ln" not in name and not name.endswith("_Softmax"), name
    assert not any(n.op_type in ("Pow", "Sqrt", "Div", "ReduceMean") for n in plan.nodes)
    # shape ops share their input's scale instead of requantizing
    for value, root in plan.shared.items():
        assert value.producer().op_type in ("Transpose", "Reshape", "Flatten", "MaxPool")
        assert root in plan.roots


def test_exclude_by_name_and_op_type_keeps_float() -> None:
    plan = _plan(conv_net(), exclude=("conv0", "Add"))
    names = {n.name for n in plan.nodes}
    assert "conv0" not in names and "add" not in names
    assert plan.kept_float["conv0"] == "excluded by --exclude"
    plan = _plan(conv_net(), families=("conv",))
    assert {n.op_type for n in plan.nodes} == {"Conv"}


def test_int8_activation_type_option(tmp_path) -> None:
    x = _images(8)
    path, result = _compress(tmp_path, conv_net(), [{"x": x}], activation_type="int8")
    model = onnx.load(path)
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    zp = {t.name: t for t in model.graph.initializer}
    assert q and all(zp[n.input[2]].data_type == TensorProto.INT8 for n in q)
    assert result.activations["activation_type"] == "int8"
    with pytest.raises(Exception, match="activation-type"):
        CompressOptions(quantize="int8", calib=[], activation_type="int4").validate()


def test_transformer_with_token_embeddings_keeps_top1(tmp_path) -> None:
    """quantize_static crashes on int32 bias here, and loses top-1 without it."""
    rng = np.random.default_rng(0)
    calib = [{"ids": rng.integers(0, 64, (4, int(t)))} for t in (6, 9, 12, 7)]  # lengths vary
    path, result = _compress(tmp_path, transformer(), calib, calib_method="percentile")
    ids = rng.integers(0, 64, (32, 10))
    ref, got = _run(transformer(), {"ids": ids})[0], _run(path, {"ids": ids})[0]
    agreement = (ref.argmax(1) == got.argmax(1)).mean()
    assert agreement >= 0.9, agreement
    assert "MatMul" in result.activations["quantized_ops"]


def _ml_classifier() -> onnx.ModelProto:
    """conv net -> Softmax -> ai.onnx.ml Normalizer: quantize_static fails on such a tail."""
    base = conv_net()
    graph = base.graph
    graph.node.append(
        helper.make_node("Normalizer", ["probs"], ["scores"], norm="L1", domain="ai.onnx.ml")
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10]))
    base.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    onnx.checker.check_model(base)
    return base


def test_softmax_and_ml_tail(tmp_path) -> None:
    x = _images(8)
    path, _ = _compress(tmp_path, _ml_classifier(), [{"x": x}])
    model = onnx.load(path)
    assert any(n.domain == "ai.onnx.ml" for n in model.graph.node)
    assert _run(path, {"x": x})[0].shape == (8, 10)


def _if_model(opset: int = 13) -> onnx.ModelProto:
    """MatMul in the main graph, then an If whose branches use it (and a MatMul of their own)."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w2")
    then = helper.make_graph(
        [helper.make_node("MatMul", ["h", "w2"], ["t_out"])],
        "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 8])], [w2],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["e_out"])],
        "else", [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 8])],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other),
    ]
    zero = onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [w, zero],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("opset", [11, 13])
def test_if_subgraphs_and_old_opsets_come_out_valid(tmp_path, opset: int) -> None:
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((2, 8)).astype(np.float32)} for _ in range(4)]
    path, _ = _compress(tmp_path, _if_model(opset), calib)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    for sign in (1.0, -1.0):
        x = np.abs(rng.standard_normal((2, 8))).astype(np.float32) * sign
        ref, got = _run(_if_model(opset), {"x": x})[0], _run(path, {"x": x})[0]
        cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got)))
        assert cos > 0.99


def test_compress_model_in_memory_reports_what_stayed_float() -> None:
    rng = np.random.default_rng(0)
    calib = [{"ids": rng.integers(0, 64, (2, 8))} for _ in range(3)]
    # Placement without the measure step: what it keeps depends on timings.
    options = CompressOptions(quantize="int8", calib=calib, progress=False, measure=False)
    model, result = compress_model(ir.from_proto(transformer()), options)
    acts = result.activations
    assert acts["calibration_samples"] == 6
    assert acts["tensors"] > 0 and acts["statistics_bytes"] > 0
    assert any("Softmax" in name for name in acts["kept_float"])
    onnx.checker.check_model(ir.to_proto(model))
    options = CompressOptions(quantize="int8", calib=calib, progress=False)
    model, result = compress_model(ir.from_proto(transformer()), options)
    assert any("int8 runs at" in note for note in result.notes)
    assert result.activations["latency_ratio"] > 0
    onnx.checker.check_model(ir.to_proto(model))


def _conv_gap_head() -> onnx.ModelProto:
    """SqueezeNet's tail: Conv, Relu, GlobalAveragePool as a graph output, then Softmax."""
    rng = np.random.default_rng(3)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], rng.standard_normal(216) * 0.3)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["f"], name="flatten"),
        helper.make_node("Softmax", ["f"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 8, 1, 1]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 8]),
        ],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_pooling_that_shrinks_runs_int8_even_as_a_graph_output(tmp_path) -> None:
    # Dequantizing after the pool touches 256x fewer values than before it.
    plan = _plan(_conv_gap_head())
    assert {n.name: f for n, f in plan.nodes.items()} == {"conv": "conv", "gap": "pool"}
    x = _images()
    path, _ = _compress(tmp_path, _conv_gap_head(), [{"x": x[i : i + 4]} for i in range(0, 16, 4)])
    assert _fused_ops(path, tmp_path)["QLinearGlobalAveragePool"] == 1
    model = onnx.load(path)
    assert [o.name for o in model.graph.output] == ["pooled", "probs"]
    onnx.checker.check_model(model, full_check=True)
    ref, got = _run(_conv_gap_head(), {"x": x}), _run(path, {"x": x})
    # uint8 output over [0, max]: rounding adds at most half a step, plus the conv's error
    step = float(ref[0].max()) / 255
    assert np.abs(ref[0] - got[0]).max() <= 4 * step
    np.testing.assert_allclose(got[1].sum(1), 1.0, rtol=1e-5)


def test_measure_step_timing_stops_once_the_decision_is_settled() -> None:
    """The paired ratio is judged against the 3% band: clearly outside or clearly inside
    settles it; a ratio on the band's edge, or noise wider than the band, does not."""
    rng = np.random.default_rng(0)
    base = list(1e-3 * (1 + 0.01 * rng.standard_normal(16)))
    quiet = 1 + 0.002 * rng.standard_normal(16)
    assert _settled(list(np.array(base) * 1.3 * quiet), base)  # 30% slower
    assert _settled(list(np.array(base) * 0.8 * quiet), base)  # 20% faster
    assert _settled(list(np.array(base) * quiet), base)  # the same, within 0.2%
    assert not _settled(list(np.array(base) * 0.97 * quiet), base)  # on the edge
    noisy = np.exp(0.1 * rng.standard_normal(16))
    assert not _settled(list(np.array(base) * noisy), base)  # 10% noise per run


def test_a_gain_the_noise_cannot_tell_from_the_band_keeps_the_incumbent() -> None:
    """A family goes float for speed only when the paired runs put its gain past the 3%
    band by 3 standard errors: the same 5% gain is clear on a quiet machine and not on
    a loaded one, where the incumbent (int8 kept) stays, as it does for a 2% gain."""
    bench = Bench.__new__(Bench)
    for pair, verdict in [
        ((np.log(0.95), 0.002), -1),  # 5% faster, quiet: clearly
        ((np.log(0.95), 0.02), 0),  # 5% faster, noisy: not clear
        ((np.log(0.98), 0.001), 0),  # inside the band
        ((np.log(1.10), 0.01), 1),  # 10% slower, clearly
    ]:
        bench.pair = pair
        assert bench.clearly() == verdict, pair
