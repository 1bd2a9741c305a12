"""int8 weights that onnxruntime's uint8 x int8 kernels cannot overflow where this CPU
needs it (methods/weights/saturation.py): the probe tells the truth, auto stays within the
rounding bound, reduced and full ranges give the codes they promise."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import _init, _model, ort_session, vin
from onnx import helper, numpy_helper

from onnxcomp.cli import main
from onnxcomp.methods.weights.saturation import saturating_ops
from onnxcomp.pipeline.compress import compress

K, N = 64, 8


def _model_and_data(tmp_path, op: str = "MatMul"):
    """Positive weights near their column maximum and inputs near the top of their range:
    neighbouring uint8 x int8 products are both large, as saturation needs. ``op``: a
    MatMul, or the same layer as a 1 x 1 Conv."""
    rng = np.random.default_rng(0)
    w = rng.uniform(0.9, 1.0, (K, N)).astype(np.float32)
    if op == "Conv":
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
        init, shapes = _init("w", w.T.reshape(N, K, 1, 1)), (["B", K, 1, 1], ["B", N, 1, 1])
    else:
        node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
        init, shapes = _init("w", w), (["B", K], ["B", N])
    proto = _model([node], [vin("x", shapes[0])], [vin("y", shapes[1])], [init], opset=13)
    src, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(proto, src)
    x = rng.uniform(0.8, 1.0, (16, K)).astype(np.float32)
    x[0, 0] = 0.0  # the calibrated range starts at zero, as ranges do
    np.savez(calib, x=x.reshape(16, K, 1, 1) if op == "Conv" else x)
    return src, calib, w, x


def _codes(path) -> np.ndarray:
    model = onnx.load(str(path))
    return next(
        numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    )


def _bound(w: np.ndarray, x: np.ndarray, bits: int) -> float:
    """|x_q w_q - x w| <= sum_k (s_x/2 |w| + |x| s_w/2) for one output, plus the rounding
    of an int8 output (s_y/2); scales from the ranges the quantizer sees."""
    s_x = float(x.max()) / 255
    s_w = float(np.abs(w).max()) / ((1 << (bits - 1)) - 1)
    y = x @ w
    s_y = float(y.max()) / 255
    return K * (s_x / 2 * float(np.abs(w).max()) + float(x.max()) * s_w / 2) + s_y / 2


@pytest.mark.parametrize("op", ["MatMul", "Conv"])
@pytest.mark.parametrize("weight_range", ["auto", "full", "reduced"])
def test_int8_output_against_the_rounding_bound(tmp_path, weight_range, op):
    src, calib, w, x = _model_and_data(tmp_path, op)
    out = tmp_path / "q.onnx"
    result = compress(src, out, quantize="int8", calib=str(calib), measure=False,
                      weight_range=weight_range)  # fmt: skip
    saturates = op in saturating_ops()
    bits = {"full": 8, "reduced": 7}.get(weight_range, 7 if saturates else 8)
    assert np.abs(_codes(out)).max() == (1 << (bits - 1)) - 1
    said = any("7-bit" in n for n in result.notes)
    assert said == (bits == 7)
    feed = x.reshape(16, K, 1, 1) if op == "Conv" else x
    got = ort_session(out).run(None, {"x": feed})[0].reshape(16, N)
    err = float(np.abs(got - x @ w).max())
    if bits == 7 or not saturates:
        assert err <= _bound(w, x, bits)
    elif op == "MatMul":  # the probe's verdict on a real layer: full range overflows it
        assert err > 10 * _bound(w, x, 8)
    # (a full-range 1 x 1 Conv may run onnxruntime's exact symmetric kernel: no claim)


def test_an_unknown_weight_range_is_one_line_and_exit_2(tmp_path, capsys):
    src, calib, _, _ = _model_and_data(tmp_path)
    rc = main(["compress", str(src), "-o", str(tmp_path / "o.onnx"), "--quantize", "int8",
               "--calib", str(calib), "--weight-range", "9bit"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "weight-range" in err and len(err.splitlines()) == 1
