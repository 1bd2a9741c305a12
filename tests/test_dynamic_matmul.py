"""Weight MatMul/Gemm with run-time activation quantization (methods/int8/dynamic_matmul.py)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from model_builders import _init, _model, vin
from onnx import helper

from onnxcomp.methods.int8.dynamic_matmul import DynamicMatMulPass, dynamic_candidates
from onnxcomp.methods.int8.flow import prepare_int8
from onnxcomp.methods.int8.measure_step import _next_trial
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass
from onnxcomp.methods.weights.saturation import saturating_ops


def _linear_model(seed: int = 0) -> onnx.ModelProto:
    """Exporter idioms: Add(bias, MatMul) with the bias first, three MatMuls sharing an
    input (Q/K/V), and a Gemm with transB=1 whose output is a graph output."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("wq", rng.standard_normal((16, 16)).astype(np.float32)),
        _init("wk", rng.standard_normal((16, 16)).astype(np.float32)),
        _init("wv", rng.standard_normal((16, 16)).astype(np.float32)),
        _init("bq", rng.standard_normal(16).astype(np.float32)),
        _init("wg", rng.standard_normal((8, 16)).astype(np.float32)),  # [N, K]: transB
        _init("bg", rng.standard_normal(8).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("Add", ["bq", "q"], ["qb"], name="q_bias"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Add", ["qb", "k"], ["qk"]),
        helper.make_node("Add", ["qk", "v"], ["h"]),
        helper.make_node("Gemm", ["h", "wg", "bg"], ["y"], name="head", transB=1),
    ]
    return _model(nodes, [vin("x", ["N", 16])], [vin("y", ["N", 8])], inits, opset=13)


def _run(proto: onnx.ModelProto, feed, optimized: str | None = None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized:
        opts.optimized_model_filepath = optimized
    session = ort.InferenceSession(
        proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)


def _weights_and_dynamic() -> tuple[onnx.ModelProto, onnx.ModelProto, list[str]]:
    model = ir.from_proto(_linear_model())
    prepare_int8(model)  # shape inference: only float32 tensors are rewritten
    # 7-bit where this CPU's u8 x s8 kernels would saturate (methods/weights/saturation.py)
    QuantizeWeightsPass(reduced=saturating_ops())(model)
    weights_only = ir.to_proto(model)
    assert dynamic_candidates(model) == {"MatMul": 3, "Gemm": 1}
    rewrite = DynamicMatMulPass()
    rewrite(model)
    return weights_only, ir.to_proto(model), rewrite.rewritten


def test_rewrite_is_valid_and_within_the_rounding_bound(tmp_path) -> None:
    weights_only, dynamic, rewritten = _weights_and_dynamic()
    onnx.checker.check_model(dynamic, full_check=True)
    assert sorted(rewritten) == ["head", "k_proj", "q_proj", "v_proj"]
    ops = collections.Counter(n.op_type for n in dynamic.graph.node)
    assert ops["DynamicQuantizeLinear"] == 2  # x once for q/k/v, h once for the head
    assert ops["MatMulInteger"] == 4 and "MatMul" not in ops and "Gemm" not in ops
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    # Against the weight-only model (same int8 weights) only the activation rounding
    # differs: |a - a_hat| <= s_a / 2 per element, so output n of a projection moves by at
    # most s_a / 2 * sum_k |w[k, n]|. The head reads h = q + k + v (each moved that way)
    # rounded once more (s_h / 2). Float weights stand in for the int8 ones (+2%).
    ref = _run(weights_only, {"x": x})[0]
    got = _run(dynamic, {"x": x})[0]
    w = {t.name: onnx.numpy_helper.to_array(t) for t in _linear_model().graph.initializer}
    s_x = (max(x.max(), 0) - min(x.min(), 0)) / 255
    dh = s_x / 2 * sum(np.abs(w[k]).sum(axis=0) for k in ("wq", "wk", "wv"))  # [16]
    h = x @ w["wq"] + w["bq"] + x @ w["wk"] + x @ w["wv"]
    s_h = (max(h.max(), 0) - min(h.min(), 0) + 2 * dh.max()) / 255
    bound = ((dh + s_h / 2) @ np.abs(w["wg"]).T).max() * 1.02 + 1e-5
    assert np.abs(got - ref).max() <= bound
    assert np.abs(got - ref).max() > 0  # the activations really were rounded


def test_onnxruntime_fuses_scale_and_bias_into_one_kernel(tmp_path) -> None:
    _, dynamic, _ = _weights_and_dynamic()
    path = str(tmp_path / "optimized.onnx")
    _run(dynamic, {"x": np.ones((2, 16), np.float32)}, optimized=path)
    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    assert ops["MatMulIntegerToFloat"] + ops["DynamicQuantizeMatMul"] == 4
    assert "MatMulInteger" not in ops and "Cast" not in ops
    # The bias written first (Add(bq, q)) was swapped so the kernel absorbed it: what is
    # left are the two residual Adds and the Gemm bias.
    assert ops["Add"] == 3 - 1


def test_a_node_excluded_by_name_stays_float() -> None:
    model = ir.from_proto(_linear_model())
    prepare_int8(model)  # shape inference: only float32 tensors are rewritten
    # 7-bit where this CPU's u8 x s8 kernels would saturate (methods/weights/saturation.py)
    QuantizeWeightsPass(reduced=saturating_ops())(model)
    rewrite = DynamicMatMulPass(exclude=frozenset({"head"}))
    rewrite(model)
    assert "head" not in rewrite.rewritten and len(rewrite.rewritten) == 3
    assert [n.op_type for n in model.graph if n.name == "head"] == ["Gemm"]


def test_measure_step_switches_are_tried_once_and_only_where_they_apply() -> None:
    families = frozenset({"matmul", "add", "shape"})
    assert _next_trial("dynamic", families, frozenset({"dynamic"}), slow=False) == families | {
        "dynamic"
    }
    assert _next_trial("dynamic", families, frozenset(), slow=False) is None
    assert _next_trial("dynamic", families | {"dynamic"}, frozenset({"dynamic"}), False) is None
    # Once the weight MatMuls went float, the switch would rebuild the same graph.
    assert _next_trial("dynamic", frozenset({"add"}), frozenset({"dynamic"}), True) is None
    # A fast model keeps its int8 GEMMs; a slow one may drop them, and the dynamic switch
    # goes with the last of the weight MatMul/Gemm families it applied to.
    assert _next_trial("matmul", families, frozenset(), slow=False) is None
    trial = _next_trial("matmul", families | {"dynamic"}, frozenset(), slow=True)
    assert trial == frozenset({"add", "shape"})
