"""What is left float once the weights are int8: vectors stored float16, exporter bias
Adds folded into the Conv, no inferred shapes written (the PaddleOCR classifier's int8
file went from 0.389x to 0.31x of its input with these)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from model_builders import _init, _model, vin
from onnx import helper, numpy_helper

from onnxcomp import compress
from onnxcomp.methods.weights.float16_vectors import MAX_RELATIVE_ERROR, exact_enough
from onnxcomp.passes.fold_conv_bias import FoldConvBiasAddPass

C = 96  # channels: vectors long enough to be worth a Cast node


def _exporter_conv(bias_shape=(1, C, 1, 1), second_reader: bool = False) -> onnx.ModelProto:
    """Conv without bias + Add(conv, reshaped bias), then a 1x1 Conv, as Paddle writes."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((C, 3, 3, 3)).astype(np.float32) * 0.3
    bias = rng.standard_normal(bias_shape).astype(np.float32)
    w2 = rng.standard_normal((C, C, 1, 1)).astype(np.float32) * 0.1
    b2 = rng.standard_normal(C).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "bias"], ["a1"], name="bias_add"),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2"),
    ]
    outputs = [vin("y", ["N", C, 8, 8])]
    if second_reader:
        nodes.append(helper.make_node("Sigmoid", ["c1"], ["s"]))
        outputs.append(vin("s", ["N", C, 8, 8]))
    inits = [_init("w1", w1), _init("bias", bias), _init("w2", w2), _init("b2", b2)]
    return _model(nodes, [vin("x", ["N", 3, 8, 8])], outputs, inits, opset=13)


def _run(model, x):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _x():
    return np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)


def test_per_channel_bias_add_is_folded_into_the_conv() -> None:
    model = ir.from_proto(_exporter_conv())
    fold = FoldConvBiasAddPass()
    fold(model)
    folded = ir.to_proto(model)
    assert fold.folded == 1
    assert "Add" not in {n.op_type for n in folded.graph.node}
    np.testing.assert_allclose(_run(folded, _x())[0], _run(_exporter_conv(), _x())[0],
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_bias_adds_that_are_not_per_channel_or_shared_stay() -> None:
    # A [C] vector broadcasts along the width axis, not the channels: no bias.
    for proto in (_exporter_conv(bias_shape=(8,)), _exporter_conv(second_reader=True)):
        fold = FoldConvBiasAddPass()
        fold(ir.from_proto(proto))
        assert fold.folded == 0


def test_float_vectors_are_stored_float16_and_folded_at_load(tmp_path) -> None:
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(_exporter_conv(), src)
    result = compress(src, out, quantize="weights")
    assert any("float16" in note for note in result.notes)
    written = onnx.load(str(out))
    halves = [t for t in written.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert halves and all(len([d for d in t.dims if d > 1]) == 1 for t in halves)
    # onnxruntime folds Cast(float16) at session creation: no Cast is left to run.
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert "Cast" not in ops
    # Each stored vector is within 2**-11 of the float32 one it replaces.
    original = {t.name: numpy_helper.to_array(t) for t in _exporter_conv().graph.initializer}
    for t in halves:
        name = t.name.removesuffix("_f16")
        if name in original:
            ref = original[name]
            err = np.abs(numpy_helper.to_array(t).astype(np.float32) - ref)
            assert np.all(err <= MAX_RELATIVE_ERROR * np.abs(ref))
    ref, got = _run(str(src), _x())[0], _run(str(out), _x())[0]
    np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())


def test_a_layer_kept_float_keeps_its_vectors_float32(tmp_path) -> None:
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(_exporter_conv(), src)
    compress(src, out, quantize="weights", exclude=["conv2"])
    written = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    assert written["b2"].data_type == onnx.TensorProto.FLOAT


def test_float16_refuses_values_it_cannot_hold() -> None:
    assert exact_enough(np.linspace(-3, 3, 100, dtype=np.float32))
    assert exact_enough(np.zeros(100, np.float32))
    assert not exact_enough(np.full(100, 1e-6, np.float32))  # below float16's normal range
    assert not exact_enough(np.full(100, -3.0e38, np.float32))  # attention masks
    assert not exact_enough(np.array([1.0, -np.inf], np.float32))


def test_debug_reads_weights_whose_scale_is_stored_float16(tmp_path) -> None:
    from onnxcomp.debug import debug

    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(_exporter_conv(), src)
    compress(src, out, quantize="weights")
    written = onnx.load(str(out))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in written.graph.initializer)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(3).standard_normal((8, 3, 8, 8)).astype(np.float32))
    result = debug(src, out, str(data))
    states = {layer.node: layer.weights for layer in result.layers}
    # conv1 absorbed the bias Add and writes its tensor (a1): debug matches tensors by
    # name, so that layer is reported under the original producer of a1, the Add.
    assert states["conv2"] == "quantized" and states["bias_add"] == "quantized"
