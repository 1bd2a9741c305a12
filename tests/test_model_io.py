"""Saving: atomic, validated, deterministic; external data in and out."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from model_builders import big_matmul_model, conv_net

from onnxcomp import OnnxcompError, compress, load, save
from onnxcomp.io import model_io as model


def test_same_input_same_options_same_bytes(save_model, tmp_path):
    src = save_model(conv_net())
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    compress(src, a, prune_sparsity=0.5, quantize="weights")
    compress(src, b, prune_sparsity=0.5, quantize="weights")
    assert a.read_bytes() == b.read_bytes()


def test_invalid_model_is_never_written(tmp_path, save_model):
    m = load(save_model(conv_net()))
    # break it: a node reads a value nothing produces
    dangling = ir.Value(name="ghost", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1]))
    next(iter(m.graph)).replace_input_with(0, dangling)
    out = tmp_path / "out.onnx"
    with pytest.raises(OnnxcompError, match="refusing to write"):
        save(m, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxcomp-")]


def test_existing_output_survives_a_failed_write(tmp_path, save_model):
    src = save_model(conv_net())
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous result")
    m = load(src)
    dangling = ir.Value(name="ghost", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1]))
    next(iter(m.graph)).replace_input_with(0, dangling)
    with pytest.raises(OnnxcompError):
        save(m, out)
    assert out.read_bytes() == b"previous result"


def test_external_data_input_is_read_and_output_is_self_contained(tmp_path):
    src = tmp_path / "ext.onnx"
    onnx.save(
        conv_net(),
        src,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights")
    assert result.input_bytes > src.stat().st_size  # the data file counts
    assert not (tmp_path / "out.onnx.data").exists()
    feed = {"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    ref = ort.InferenceSession(str(src)).run(None, feed)[0]
    new = ort.InferenceSession(str(out)).run(None, feed)[0]
    np.testing.assert_allclose(new, ref, rtol=0.05, atol=0.05 * np.abs(ref).max())


def test_large_models_go_to_external_data(tmp_path, monkeypatch):
    """The > 2 GB path, exercised with a small limit; the real size runs in test_2gb."""
    monkeypatch.setattr(model, "_PROTO_LIMIT", 1000)
    m = ir.from_proto(big_matmul_model(64, 64))
    out = tmp_path / "big.onnx"
    save(m, out)
    assert (tmp_path / "big.onnx.data").stat().st_size >= 64 * 64 * 4
    assert model.file_size(out) > out.stat().st_size
    y = ort.InferenceSession(str(out)).run(None, {"x": np.ones((1, 64), np.float32)})[0]
    np.testing.assert_allclose(y, np.full((1, 64), 32.0))


def test_packed_codebooks_take_the_external_data_path_too(tmp_path, monkeypatch):
    """A model over the proto limit (made small here) read from external data and written
    packed: the codes and tables go to the output's own data file and decode at load."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 64)).astype(np.float32)
    proto = big_matmul_model(256, 64)
    proto.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "w"))
    src = tmp_path / "src.onnx"
    onnx.save(proto, src, save_as_external_data=True, all_tensors_to_one_file=True,
              location="src.onnx.data", size_threshold=0)  # fmt: skip
    monkeypatch.setattr(model, "_PROTO_LIMIT", 1000)
    out = tmp_path / "cb.onnx"
    compress(src, out, quantize="codebook", bits=4, pack=True, allow_larger=True)
    assert (tmp_path / "cb.onnx.data").exists()  # its own data file, not the input's
    x = rng.standard_normal((1, 256)).astype(np.float32)
    y = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    ref = x @ w
    # 16 values for a Gaussian tensor: ~10% relative error per weight, independent
    # across weights, so the outputs' relative L2 error is ~10% too
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.2


@pytest.mark.skipif(not os.environ.get("ONNXCOMP_BIG_TESTS"), reason="set ONNXCOMP_BIG_TESTS=1")
def test_2gb_model_round_trips(tmp_path):
    """A real > 2 GB model: ~20 s and ~11 GB of RAM, so opt-in."""
    from onnxcomp import CompressOptions, compress_model

    rows, cols = 16384, 33000
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, rows]))
    w = ir.Value(
        name="w",
        const_value=ir.tensor(np.full((rows, cols), 0.5, np.float32), name="w"),
        type=ir.TensorType(ir.DataType.FLOAT),
        shape=ir.Shape([rows, cols]),
    )
    node = ir.node("MatMul", [x, w], name="mm")
    node.outputs[0].name = "y"
    node.outputs[0].dtype = ir.DataType.FLOAT
    node.outputs[0].shape = ir.Shape([1, cols])
    g = ir.Graph(
        [x], node.outputs, nodes=[node], initializers=[w], opset_imports={"": 17}, name="big"
    )
    big = tmp_path / "big.onnx"
    save(ir.Model(g, ir_version=8), big, check_runtime=False)
    assert (tmp_path / "big.onnx.data").stat().st_size > 2 * 10**9
    m, _ = compress_model(load(big), CompressOptions(quantize="weights"))
    save(m, tmp_path / "small.onnx")
    y = ort.InferenceSession(str(tmp_path / "small.onnx")).run(
        None, {"x": np.ones((1, rows), np.float32)}
    )[0]
    np.testing.assert_allclose(y[0, :3], rows * 0.5, rtol=1e-3)


def test_loaded_weights_own_their_data(tmp_path):
    # A tensor that views the parsed protobuf keeps the whole message alive; a loaded
    # model must not, or replacing a weight (int8, BatchNorm folding) frees nothing.
    proto = conv_net()
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    loaded = load(path)
    values = list(loaded.graph.initializers.values())
    assert values and not any(isinstance(v.const_value, ir.TensorProtoTensor) for v in values)
    for tensor in proto.graph.initializer:
        got = loaded.graph.initializers[tensor.name].const_value
        np.testing.assert_array_equal(got.numpy(), onnx.numpy_helper.to_array(tensor))
        assert got.dtype == ir.DataType(tensor.data_type)


def test_opset_upgrade_keeps_the_weights_in_place():
    """The version converter sees big weights as references only: the upgraded model
    holds the very same tensors (no copy), with their values, and runs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    shape = np.array([1, 32], np.int64)  # small: inline through the converter
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Reshape", ["h", "shape"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(shape, "shape")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    proto.ir_version = 7
    m = ir.from_proto(proto)
    model.detach_from_proto(m)
    before = m.graph.initializers["w"].const_value
    up, old = model.upgrade_opset(m, 13)
    assert old == 11 and model.opset(up) == 13
    assert up.graph.initializers["w"].const_value is before
    np.testing.assert_array_equal(up.graph.initializers["w"].const_value.numpy(), w)
    # the model handed in is left as it was
    assert m.graph.initializers["w"].const_value is before
    x = rng.standard_normal((1, 64)).astype(np.float32)
    sess = ort.InferenceSession(
        ir.to_proto(up).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)


def test_opset_upgrade_refuses_a_weight_it_cannot_place_back():
    stub = ir.ExternalTensor(
        model._STUB_LOCATION, 0, 16, ir.DataType.FLOAT, shape=ir.Shape([4]), name="lost"
    )
    value = ir.Value(name="lost", const_value=stub)
    graph = ir.Graph([], [], nodes=[], initializers=[value], opset_imports={"": 13})
    assert not model._unstub(ir.Model(graph, ir_version=8), {})
