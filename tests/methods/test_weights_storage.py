"""methods/weights/: the storage passes leave a model they do not apply to unchanged, and
rewrite BatchNorm into two vectors with the same outputs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from _models import mlp
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.graph.weights import find_weights
from onnxcomp.methods.codebook.quantize_codebook import CodebookQuantizePass
from onnxcomp.methods.weights.batchnorm_vectors import BatchNormTwoVectorsPass
from onnxcomp.methods.weights.gemm_nbits_layout import GemmWeightLayoutPass
from onnxcomp.methods.weights.pack_int8 import PackInt8Pass
from onnxcomp.methods.weights.small_weights import saving_is_small, small_note


def test_passes_without_their_ops_do_nothing() -> None:
    assert not PackInt8Pass()(mlp()).modified
    assert not GemmWeightLayoutPass()(mlp()).modified


def test_codebook_pass_quantizes_both_weights() -> None:
    step = CodebookQuantizePass(4)
    step(mlp())
    assert len(step.records) == 2


def _bn_model() -> ir.Model:
    rng = np.random.default_rng(0)
    c = 4
    inits = [
        numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "bias"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "var"),
    ]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node], "bn", [vi("x", TensorProto.FLOAT, [2, c, 3, 3])],
        [vi("y", TensorProto.FLOAT, [2, c, 3, 3])], inits,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.from_proto(proto)


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    data = ir.to_proto(model).SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_batchnorm_as_two_vectors_keeps_the_outputs() -> None:
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 3)).astype(np.float32)
    model = _bn_model()
    before = _run(model, x)
    step = BatchNormTwoVectorsPass()
    assert step(model).modified and step.rewritten
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)


def test_a_weight_saving_under_a_thousandth_keeps_8_bits() -> None:
    w2 = next(w for w in find_weights(mlp()) if w.name == "w2")  # 512 of 4608 weights
    assert not saving_is_small(w2, 4, total_bytes=4 * 4608)
    assert saving_is_small(w2, 4, total_bytes=10**9)
    assert small_note([], 4) is None and "w2" in (small_note(["w2"], 4) or "")
