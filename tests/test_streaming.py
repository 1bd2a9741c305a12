"""Weights of an external-data model are read in blocks, never mapped whole, and the
cut they are pruned by is exact whatever the block size (issue 15: peak memory)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import model_io, streaming
from onnxcomp.passes import prune
from onnxcomp.passes.prune import MagnitudePrunePass, _global_masks
from onnxcomp.passes.quantize_weights import QuantizeWeightsPass


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
