"""compress's guards judged on the model's outputs: small weights keep 8 bits, low-bit
runs without calibration data name their loud layers, int4 keeps its worst layers int8
when the outputs move past the tolerance."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import compress
from onnxcomp.methods.weights.small_weights import UNCALIBRATED_ERROR
from onnxcomp.metrics import Judge
from onnxcomp.options import LayerOptions
from onnxcomp.runtime.session import make_session


def _save(nodes, inits, path, inputs, output, opset=17) -> str:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k)
         for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def test_a_tiny_first_conv_keeps_8_bits_and_the_big_layer_gets_4(tmp_path):
    rng = np.random.default_rng(0)
    inits = {"conv.w": rng.normal(size=(8, 3, 3, 3)), "fc.w": rng.normal(size=(8 * 16 * 16, 256))}
    nodes = [
        helper.make_node("Conv", ["x", "conv.w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("MatMul", ["f", "fc.w"], ["y"], name="fc"),
    ]
    src = _save(nodes, inits, tmp_path / "m.onnx", [("x", ["N", 3, 16, 16])], ("y", ["N", 256]))
    result = compress(src, tmp_path / "c.onnx", quantize="codebook", bits=4)
    records = {r.name: r for r in result.quantized}
    assert records["conv.w"].k == 216 and records["conv.w"].max_abs_error == 0.0  # exact
    assert records["fc.w"].k == 16
    note = next(n for n in result.notes if "small weights kept at 8 bits" in n)
    assert "conv.w" in note and "fc.w" not in note
    # a recipe that names the layer takes it to 4 bits after all
    forced = compress(
        src,
        tmp_path / "f.onnx",
        quantize="codebook",
        bits=4,
        layers={"conv.w": LayerOptions(bits=4)},
    )
    assert {r.name: r for r in forced.quantized}["conv.w"].k == 16


def test_int4_without_calibration_names_the_layers_it_hurts(tmp_path):
    rng = np.random.default_rng(1)
    loud = rng.normal(size=(256, 256))
    loud[::32] = 20.0  # one outlier per block of 32 rows: the rest round to 0 or +-1 step
    inits = {"a.w": rng.normal(size=(256, 256)), "b.w": loud}
    nodes = [
        helper.make_node("MatMul", ["x", "a.w"], ["h"], name="a"),
        helper.make_node("MatMul", ["h", "b.w"], ["y"], name="b"),
    ]
    src = _save(nodes, inits, tmp_path / "m.onnx", [("x", ["N", 256])], ("y", ["N", 256]), 21)
    result = compress(src, tmp_path / "c.onnx", quantize="int4")
    errors = {r.name: r.relative_error for r in result.quantized if r.bits == 4}
    assert errors["b.w"] > UNCALIBRATED_ERROR > errors["a.w"]
    warning = next(n for n in result.notes if n.startswith("warning: int4 without --calib"))
    assert "b.w" in warning and "a.w" not in warning


def test_int4_keeps_its_worst_layers_int8_when_the_outputs_move(tmp_path):
    rng = np.random.default_rng(2)
    depth, width = 8, 128
    inits, nodes, x = {}, [], "x"
    for i in range(depth):
        w = rng.normal(size=(width, width)) / np.sqrt(width)
        w[rng.integers(0, width, 6), :] *= 3.0  # a few heavy rows: coarse 4-bit blocks
        inits[f"w{i}"] = w
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
        x = f"h{i}"
    src = _save(nodes, inits, tmp_path / "m.onnx", [("x", ["N", width])], (x, ["N", width]), 21)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.normal(size=(64, width)).astype(np.float32))
    out = tmp_path / "c.onnx"
    result = compress(src, out, quantize="int4", calib=str(calib), awq=False)
    note = next(n for n in result.notes if "kept int8 so the model's" in n)
    bits = [r.bits for r in result.quantized]
    assert 4 in bits and 8 in bits, note  # some layers stayed int4, the worst went int8
    assert "(all int4: " in note
    # the written model is within the tolerance on the calibration data
    ref, new = make_session(onnx.load(src)), make_session(onnx.load(out))
    feed = {"x": np.load(calib)["x"]}
    judge = Judge([x], detect=False)
    judge.update(ref.run(None, feed), new.run(None, feed))
    assert judge.verdict().drop <= 0.02


def test_anchor_grids_and_arange_weights_stay_exact(tmp_path):
    """A YOLOv8 tail: a DFL Conv whose weights are 0..15 and an anchor grid added to the
    box distances. int8 rows moved every anchor by up to half a step (10 px boxes on a
    real export, F1 vs fp32 0.67); both must come out exact."""
    rng = np.random.default_rng(4)
    grid = (np.arange(2 * 4096, dtype=np.float32).reshape(1, 2, 4096) % 128) + 0.5
    inits = {
        "dfl.w": np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1),
        "anchors": grid,
        "head.w": rng.normal(size=(16 * 2, 16, 1, 1)),
        "shape": np.array([1, 16, 2, 4096], np.int64),
        "shape2": np.array([1, 2, 4096], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "head.w"], ["h"], name="head"),
        helper.make_node("Reshape", ["h", "shape"], ["r"]),
        helper.make_node("Softmax", ["r"], ["p"], axis=1),
        helper.make_node("Conv", ["p", "dfl.w"], ["d"], name="dfl"),
        helper.make_node("Reshape", ["d", "shape2"], ["dd"]),
        helper.make_node("Add", ["dd", "anchors"], ["y"]),
    ]
    src = _save(nodes, inits, tmp_path / "m.onnx", [("x", [1, 16, 1, 4096])], ("y", [1, 2, 4096]))
    x = rng.normal(size=(1, 16, 1, 4096)).astype(np.float32)
    ref = make_session(onnx.load(src)).run(None, {"x": x})[0]
    weights_only = compress(src, tmp_path / "w2.onnx", quantize="weights", exclude=("head",))
    new = make_session(onnx.load(tmp_path / "w2.onnx")).run(None, {"x": x})[0]
    assert np.array_equal(new, ref), weights_only.notes  # DFL exact, anchors exact
