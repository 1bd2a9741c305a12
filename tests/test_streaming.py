"""Weights of an external-data model are read in blocks, never mapped whole, and the
cut they are pruned by is exact whatever the block size (issue 15: peak memory)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import conv_net
from onnx import TensorProto, helper, numpy_helper

import onnxcomp
from onnxcomp.graph import streaming
from onnxcomp.io import model_io
from onnxcomp.methods.prune import magnitude as prune
from onnxcomp.methods.prune.magnitude import MagnitudePrunePass, _global_masks
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass


def _external_model(tmp_path, rng) -> tuple[ir.Model, list[np.ndarray]]:
    """Two MatMul weights in ``m.onnx.data``; the second full of ties."""
    w1 = rng.standard_normal((16, 40)).astype(np.float32)
    w2 = rng.integers(-3, 4, size=(40, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(proto, path, save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    return model_io.load(path), [w1, w2]


def _stable_mask(arrays: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    flat = np.concatenate([np.abs(a).ravel() for a in arrays])
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(flat, kind="stable")[: round(sparsity * flat.size)]] = True
    parts = np.split(mask, np.cumsum([a.size for a in arrays])[:-1])
    return [p.reshape(a.shape) for p, a in zip(parts, arrays, strict=True)]


def _arrays(model: ir.Model) -> list[np.ndarray]:
    return [model.graph.initializers[n].const_value.numpy() for n in ("w1", "w2")]


@pytest.mark.parametrize("global_", [False, True])
def test_external_weights_pruned_in_blocks_exactly(tmp_path, monkeypatch, global_):
    monkeypatch.setattr(streaming, "BLOCK_ELEMENTS", 7)  # blocks cut across rows and ties
    model, originals = _external_model(tmp_path, np.random.default_rng(0))
    sources = [model.graph.initializers[n].const_value for n in ("w1", "w2")]
    MagnitudePrunePass(sparsity=0.45, global_=global_)(model)
    assert all(isinstance(t, ir.ExternalTensor) and t.raw is None for t in sources), (
        "the input weights were mapped instead of read in blocks"
    )
    if global_:
        expected = _stable_mask(originals, 0.45)
    else:
        expected = [_stable_mask([a], 0.45)[0] for a in originals]
    for got, original, mask in zip(_arrays(model), originals, expected, strict=True):
        assert np.array_equal(got, np.where(mask, 0, original))
        assert not np.signbit(got[mask]).any()  # +0.0, not -0.0


def test_threshold_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "BLOCK_ELEMENTS", 5)
    model, originals = _external_model(tmp_path, np.random.default_rng(1))
    MagnitudePrunePass(threshold=1.0)(model)
    for got, original in zip(_arrays(model), originals, strict=True):
        assert np.array_equal(got, np.where(np.abs(original) <= 1.0, 0, original))


def test_a_missed_bracket_falls_back_to_the_same_exact_cut(monkeypatch):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(300).astype(np.float32), rng.integers(-2, 3, 200).astype("f4")]
    wanted = _global_masks(arrays, 0.6)
    monkeypatch.setattr(prune, "_bracket", lambda sample, q: (np.uint32(0), np.uint32(0)))
    got = _global_masks(arrays, 0.6)
    for a, b, ref in zip(got, wanted, _stable_mask(arrays, 0.6), strict=True):
        assert np.array_equal(a, ref) and np.array_equal(b, ref)


def test_quantized_external_weights_are_unmapped(tmp_path):
    model, _ = _external_model(tmp_path, np.random.default_rng(3))
    sources = [model.graph.initializers[n].const_value for n in ("w1", "w2")]
    QuantizeWeightsPass()(model)
    assert all(t.raw is None for t in sources)  # read, quantized, then let go


def test_truncated_external_data_is_a_clear_error(tmp_path):
    model, _ = _external_model(tmp_path, np.random.default_rng(4))
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    from onnxcomp.errors import OnnxcompError

    with pytest.raises(OnnxcompError, match="ends early"):
        MagnitudePrunePass(sparsity=0.5)(model)


def test_a_replaced_weight_is_freed_after_shape_inference():
    """onnx_ir's shape inference lists initializers as graph inputs while it runs; its
    input container kept every one referenced afterwards, so a float weight replaced by
    int8 stayed in memory for the whole run."""
    import gc
    import weakref

    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from onnxcomp.passes.shape_inference import InferShapesPass

    w = np.ones((64, 64), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    array = np.ones((64, 64), np.float32)
    model.graph.initializers["w"].const_value = ir.Tensor(array, name="w")
    alive = weakref.ref(array)
    del array
    InferShapesPass()(model)
    assert model.graph.node(0).outputs[0].shape == ir.Shape([1, 64])
    # Replace the weight the way QuantizeWeightsPass does: a new value, the old one dropped.
    new = ir.Value(name="w2", const_value=ir.Tensor(np.zeros((64, 64), np.float32), name="w2"))
    model.graph.register_initializer(new)
    model.graph.initializers["w"].replace_all_uses_with(new)
    del model.graph.initializers["w"]
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("streamed_from", [1, 64])  # every tensor / only the bigger ones
def test_streamed_write_parses_to_the_model_ir_save_writes(tmp_path, monkeypatch, streamed_from):
    """Initializers written as fields of their own are merged by every protobuf reader:
    the parsed model equals ir.save's, order, types and doc strings included."""
    import onnx_ir as ir
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from onnxcomp.io import stream_write

    monkeypatch.setattr(stream_write, "STREAM_MIN_BYTES", streamed_from)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 16)).astype(np.float32)
    q = rng.integers(-127, 128, (16, 8)).astype(np.int8)
    h = rng.standard_normal((8,)).astype(np.float16)
    mask = rng.random((16,)) > 0.5
    shape = np.array([1, 8], np.int64)
    named = ((w, "w"), (q, "q"), (h, "h"), (mask, "mask"), (shape, "s"))
    tensors = [numpy_helper.from_array(a, n) for a, n in named]
    tensors[0].doc_string = "the first weight"
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("DequantizeLinear", ["q", "qs"], ["qd"]),
        helper.make_node("MatMul", ["a", "qd"], ["b"]),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["b", "hf"], ["c"]),
        helper.make_node("Reshape", ["c", "s"], ["y"]),
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
    ]
    tensors.append(numpy_helper.from_array(np.float32(0.02), "qs"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [16])],
        tensors,
    )  # fmt: skip
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
    before = {n: v.const_value for n, v in model.graph.initializers.items()}
    ir.save(model, tmp_path / "plain.onnx")
    stream_write.save_streamed(model, tmp_path / "streamed.onnx")
    assert {n: v.const_value for n, v in model.graph.initializers.items()} == before
    plain, streamed = onnx.load(tmp_path / "plain.onnx"), onnx.load(tmp_path / "streamed.onnx")
    assert streamed == plain
    assert [t.name for t in streamed.graph.initializer] == ["w", "q", "h", "mask", "s", "qs"]
    onnx.checker.check_model(str(tmp_path / "streamed.onnx"), full_check=True)
    # and stream_read takes the streamed layout (one graph field per initializer) back
    from onnxcomp.io import stream_read

    monkeypatch.setattr(stream_read, "READ_MIN_BYTES", 1)
    monkeypatch.setattr(model_io, "_STREAMED_READ_BYTES", 0)
    back = model_io.load(tmp_path / "streamed.onnx")
    assert list(back.graph.initializers) == list(model.graph.initializers)
    for name, value in model.graph.initializers.items():
        got = back.graph.initializers[name].const_value
        np.testing.assert_array_equal(got.numpy(), value.const_value.numpy())
    x = rng.standard_normal((1, 32)).astype(np.float32)
    runs = [
        ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )
        for f in ("plain.onnx", "streamed.onnx")
    ]
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_big_outputs_are_written_streamed(tmp_path, monkeypatch):
    from onnxcomp.io import model_io

    calls = []
    real = model_io.save_streamed
    monkeypatch.setattr(model_io, "_STREAMED_WRITE_BYTES", 1)
    monkeypatch.setattr(model_io, "save_streamed", lambda m, p: calls.append(p) or real(m, p))
    src = tmp_path / "in.onnx"
    onnx.save(conv_net(), src)
    result = onnxcomp.compress(src, tmp_path / "out.onnx", quantize="weights")
    assert len(calls) == 1 and result.output_bytes == (tmp_path / "out.onnx").stat().st_size
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)


def _mixed_model() -> onnx.ModelProto:
    """Raw-data weights of several types, a typed-data tensor, a doc string, metadata, and
    an If branch with its own initializer."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")
    w.doc_string = "a weight"
    meta = w.metadata_props.add()
    meta.key, meta.value = "origin", "test"
    q = numpy_helper.from_array(rng.integers(-127, 128, (32, 16)).astype(np.int8), "q")
    h = numpy_helper.from_array(rng.standard_normal((16,)).astype(np.float16), "h")
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [16], rng.standard_normal(16).tolist())
    branch_w = numpy_helper.from_array(rng.standard_normal((16,)).astype(np.float32), "bw")
    then = helper.make_graph(
        [helper.make_node("Add", ["c", "bw"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 16])], [branch_w],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 16])],
    )  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("DequantizeLinear", ["q", "qs"], ["qd"]),
        helper.make_node("MatMul", ["a", "qd"], ["b"]),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["b", "hf"], ["b2"]),
        helper.make_node("Add", ["b2", "typed"], ["c"]),
        helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [w, q, h, typed, numpy_helper.from_array(np.float32(0.01), "qs")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_streamed_read_loads_the_model_the_parser_loads(tmp_path, monkeypatch):
    """Big raw-data weights read straight from the file into arrays equal what the
    protobuf parser gives, with names, order, types, doc strings and metadata; the rest
    (typed data, If-branch weights, small tensors) goes through the parser."""
    import onnx_ir as ir

    from onnxcomp.io import stream_read

    monkeypatch.setattr(stream_read, "READ_MIN_BYTES", 32)
    monkeypatch.setattr(model_io, "_STREAMED_READ_BYTES", 0)
    path = tmp_path / "m.onnx"
    onnx.save(_mixed_model(), path)
    _, raws = stream_read.read_split(path)
    assert sorted(raws) == ["h", "q", "w"]  # typed data and the If branch stay parsed
    model_io.check_input(path)
    got, want = model_io.load(path), ir.load(path)
    assert list(got.graph.initializers) == list(want.graph.initializers)
    for name, value in want.graph.initializers.items():
        mine = got.graph.initializers[name].const_value
        assert mine.dtype == value.const_value.dtype, name
        np.testing.assert_array_equal(mine.numpy(), value.const_value.numpy())
    w = got.graph.initializers["w"].const_value
    assert w.doc_string == "a weight" and dict(w.metadata_props) == {"origin": "test"}
    # compressed, it gives the bytes the parser's model gives
    onnxcomp.compress(path, tmp_path / "streamed.onnx", quantize="weights")
    monkeypatch.setattr(model_io, "_STREAMED_READ_BYTES", 1 << 40)
    onnxcomp.compress(path, tmp_path / "parsed.onnx", quantize="weights")
    assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "parsed.onnx").read_bytes()


def test_streamed_read_of_a_bad_file_is_the_parser_s_error(tmp_path, monkeypatch):
    monkeypatch.setattr(model_io, "_STREAMED_READ_BYTES", 0)
    good = _mixed_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(good[: len(good) - 7])
    with pytest.raises(onnxcomp.OnnxcompError, match=r"cut\.onnx"):
        model_io.check_input(path)
    # an invalid model: the checker's verdict, as without streaming
    bad = _mixed_model()
    bad.graph.node[0].op_type = "NoSuchOp"
    onnx.save(bad, tmp_path / "bad.onnx")
    with pytest.raises(onnxcomp.OnnxcompError, match=r"fails onnx\.checker"):
        model_io.check_input(tmp_path / "bad.onnx")
