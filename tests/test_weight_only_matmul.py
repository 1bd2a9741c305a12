"""Weight-only int8 MatMul: MatMulNBits where it pays, decoded at load where it does not."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from model_builders import _init, _model, vin
from onnx import helper

from onnxcomp.methods.weights.decode_at_load import NBITS_MIN_ELEMENTS
from onnxcomp.pipeline.compress import compress


def two_matmuls() -> onnx.ModelProto:
    """x[.., 64] -> MatMul 64x512 (small K) -> MatMul 512x1024 (big)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "small"], ["h"], name="mm_small"),
        helper.make_node("MatMul", ["h", "big"], ["y"], name="mm_big"),
    ]
    inits = [
        _init("small", (rng.standard_normal((64, 512)) * 0.1).astype(np.float32)),
        _init("big", (rng.standard_normal((512, 1024)) * 0.05).astype(np.float32)),
    ]
    return _model(nodes, [vin("x", ["N", 64])], [vin("y", ["N", 1024])], inits, opset=21)


def test_small_weights_are_decoded_at_load_big_ones_fuse(save_model, tmp_path):
    assert 64 * 512 < NBITS_MIN_ELEMENTS <= 512 * 1024
    src = save_model(two_matmuls())
    out = tmp_path / "w.onnx"
    compress(src, out, quantize="weights")
    graph = onnx.load(str(out)).graph
    dq_weights = [n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"]
    assert dq_weights == ["big_quantized"]
    assert any(n.op_type == "Cast" and n.input[0] == "small_quantized" for n in graph.node)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops == ["MatMul", "MatMulNBits"]  # the small weight is a folded float constant
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = sess.run(None, {"x": x})
    cos = np.sum(ref[0] * got[0]) / np.linalg.norm(ref[0]) / np.linalg.norm(got[0])
    assert cos > 0.999


def test_gemm_with_transposed_weight_is_stored_kn_and_fuses(save_model, tmp_path):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((1024, 512)) * 0.05).astype(np.float32)  # [N, K], transB=1
    model = _model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
        [vin("x", ["N", 512])],
        [vin("y", ["N", 1024])],
        [_init("w", w), _init("b", rng.standard_normal(1024).astype(np.float32))],
        opset=21,
    )
    src = save_model(model)
    out = tmp_path / "w.onnx"
    compress(src, out, quantize="weights")
    stored = onnx.load(str(out))
    gemm = next(n for n in stored.graph.node if n.op_type == "Gemm")
    assert all(a.i == 0 for a in gemm.attribute if a.name == "transB")
    int8 = [list(t.dims) for t in stored.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert [512, 1024] in int8 and [1024, 512] not in int8
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node] == ["MatMulNBits"]
    x = rng.standard_normal((2, 512)).astype(np.float32)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    assert np.sum(ref * got) / np.linalg.norm(ref) / np.linalg.norm(got) > 0.999


def test_gemm_feeding_relu_is_decoded_at_load(save_model, tmp_path):
    """onnxruntime fuses Gemm + Relu first and then never fuses the DequantizeLinear."""
    rng = np.random.default_rng(0)
    model = _model(
        [
            helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
            helper.make_node("Relu", ["h"], ["y"]),
        ],
        [vin("x", ["N", 512])],
        [vin("y", ["N", 1024])],
        [_init("w", (rng.standard_normal((1024, 512)) * 0.05).astype(np.float32))],
        opset=21,
    )
    src = save_model(model)
    out = tmp_path / "w.onnx"
    compress(src, out, quantize="weights")
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "DequantizeLinear" not in ops and "Cast" not in ops  # folded at load
