"""int8 graph shapes that keep onnxruntime off its slow paths: unfused LayerNorm,
float weights for ops that stay float."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from model_builders import _init, transformer
from model_builders import _int8_model as _model
from model_builders import int8_conv_net as conv_net
from onnx import TensorProto, helper
from onnx_ir.passes.common import ShapeInferencePass

from onnxcomp.methods.int8.flow import prepare_int8
from onnxcomp.methods.int8.layernorm_guard import KeepLayerNormUnfusedPass
from onnxcomp.methods.int8.placement import plan_qdq
from onnxcomp.methods.int8.quantize_activations import InsertQDQPass
from onnxcomp.methods.weights.decode_at_load import DecodeAtLoadPass
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass
from onnxcomp.numerics.scales import activation_params


def _optimized(proto: onnx.ModelProto, tmp_path) -> onnx.ModelProto:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


def _run(proto: onnx.ModelProto, feed) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _residual_layernorm() -> onnx.ModelProto:
    """x @ W + x -> LayerNormalization, static 3-D shapes: what SkipLayerNorm fusion wants."""
    rng = np.random.default_rng(0)
    inits = [
        _init("w", rng.standard_normal((16, 16)).astype(np.float32) * 0.25),
        _init("g", np.ones(16, np.float32)),
        _init("b", np.zeros(16, np.float32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "x"], ["res"], name="res"),
        helper.make_node("LayerNormalization", ["res", "g", "b"], ["y"], axis=-1, name="ln"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])
    return _model(nodes, [x], [y], inits, opset=17)


def test_residual_add_and_layernorm_stay_two_kernels(tmp_path) -> None:
    proto = _residual_layernorm()
    assert any(
        n.op_type == "SkipLayerNormalization" for n in _optimized(proto, tmp_path).graph.node
    )
    model = ir.from_proto(proto)
    ShapeInferencePass()(model)  # the guard needs to know the Add is 3-D
    guard = KeepLayerNormUnfusedPass()
    assert guard(model).modified and guard.guarded == ["res"]
    guarded = ir.to_proto(model)
    onnx.checker.check_model(guarded)
    ops = collections.Counter(n.op_type for n in _optimized(guarded, tmp_path).graph.node)
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 1
    x = np.random.default_rng(1).standard_normal((1, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(guarded, {"x": x})[0], _run(proto, {"x": x})[0], atol=1e-5)


def test_layernorm_guard_skips_what_cannot_fuse() -> None:
    """A bias Add (constant input) or an Add that feeds no LayerNorm is left alone."""
    model = ir.from_proto(conv_net())
    assert not KeepLayerNormUnfusedPass()(model).modified


def test_decomposed_layernorm_after_int8_residual_is_guarded() -> None:
    model = ir.from_proto(transformer())
    prepare_int8(model)
    QuantizeWeightsPass()(model)
    guard = KeepLayerNormUnfusedPass()
    guard(model)
    assert sorted(guard.guarded) == ["l0_res1_Add", "l0_res2_Add", "l1_res1_Add", "l1_res2_Add"]
    for node in model.graph:
        if node.op_type == "ReduceMean" and node.name.endswith("_mean_ReduceMean"):
            assert node.inputs[0].producer().op_type == "Reshape"


def test_float_ops_get_weights_decoded_at_load(tmp_path) -> None:
    """Conv kept float: its int8 weight is decoded by Cast * scale, which onnxruntime
    folds at load, so the Conv sees a constant (prepacked) while the file keeps int8;
    the Gemm still runs int8."""
    model = ir.from_proto(conv_net(softmax=False))
    prepare_int8(model)
    QuantizeWeightsPass()(model)
    plan = plan_qdq(model, families=("gemm",))
    params = {v.name: activation_params(-4.0, 4.0, "uint8") for v in plan.roots}
    InsertQDQPass(plan, params, "uint8")(model)
    decode = DecodeAtLoadPass()
    decode(model)
    assert len(decode.converted) == 3
    proto = ir.to_proto(model)
    stored = {t.name: t.data_type for t in proto.graph.initializer}
    assert sum(1 for t in stored.values() if t == onnx.TensorProto.INT8) >= 4
    onnx.checker.check_model(proto)
    graph = _optimized(proto, tmp_path).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["QGemm"] == 1
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in ("Conv", "FusedConv"):
            assert made_by.get(node.input[1]) is None, "conv weight still dequantized at run time"
    weights_only = ir.from_proto(conv_net(softmax=False))
    prepare_int8(weights_only)
    QuantizeWeightsPass()(weights_only)
    x = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
    ref = _run(ir.to_proto(weights_only), {"x": x})[0]
    got = _run(proto, {"x": x})[0]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99
