"""Pre-activation BatchNorm stored as two vectors: same op, same outputs, fewer bytes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from model_builders import _init, _model, vin
from onnx import helper

from onnxcomp.pipeline.compress import compress


def bn_relu_conv() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = 32
    nodes = [
        helper.make_node(
            "BatchNormalization", ["x", "g", "b", "m", "v"], ["n"], name="bn", epsilon=1e-5
        ),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["y"], name="conv"),
    ]
    inits = [
        _init("g", rng.uniform(0.5, 2, c).astype(np.float32)),
        _init("b", rng.standard_normal(c).astype(np.float32)),
        _init("m", rng.standard_normal(c).astype(np.float32)),
        _init("v", rng.uniform(1e-3, 4, c).astype(np.float32)),
        _init("w", (rng.standard_normal((16, c, 3, 3)) * 0.1).astype(np.float32)),
    ]
    return _model(nodes, [vin("x", ["N", c, 8, 8])], [vin("y", ["N", 16, 6, 6])], inits)


def test_batchnorm_keeps_its_outputs_with_two_vectors(save_model, tmp_path):
    src = save_model(bn_relu_conv())
    out = tmp_path / "w.onnx"
    result = compress(src, out, quantize="weights")
    assert any("1 BatchNorms stored as two vectors" in n for n in result.notes)
    model = onnx.load(str(out))
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    assert bn.input[3] == bn.input[4]  # one shared zero vector for mean and var
    x = np.random.default_rng(1).standard_normal((2, 32, 8, 8)).astype(np.float32)
    probe = [helper.make_tensor_value_info("n", onnx.TensorProto.FLOAT, None)]

    def bn_out(m: onnx.ModelProto) -> np.ndarray:
        m.graph.output.extend(probe)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(["n"], {"x": x})[0]

    want, got = bn_out(onnx.load(str(src))), bn_out(model)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
