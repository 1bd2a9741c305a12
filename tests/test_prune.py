"""Magnitude pruning: exact sparsity, threshold semantics, and what gets stripped."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from model_builders import conv_net, embedding_model, shared_weight_model

from onnxcomp import CompressOptions, compress, compress_model
from onnxcomp.methods.prune.magnitude import MagnitudePrunePass, sparsity_mask


def _weights(path):
    model = onnx.load(path)
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9])
def test_sparsity_is_exact_per_tensor(save_model, tmp_path, sparsity):
    src = save_model(conv_net())
    out = tmp_path / "out.onnx"
    result = compress(src, out, prune_sparsity=sparsity)
    before, after = _weights(src), _weights(out)
    for name in ("w1", "wt", "wg"):
        expected = round(sparsity * before[name].size)
        assert np.count_nonzero(after[name] == 0) == expected
        kept = after[name] != 0
        # the survivors are untouched and are the largest ones
        np.testing.assert_array_equal(after[name][kept], before[name][kept])
        if expected:
            assert np.abs(before[name][~kept]).max() <= np.abs(before[name][kept]).min()
    assert {r.name for r in result.pruned} == {"w1", "wt", "wg"}


def test_threshold_zeroes_exactly_the_small_elements(save_model, tmp_path):
    src = save_model(conv_net())
    out = tmp_path / "out.onnx"
    eps = 0.2
    compress(src, out, prune_threshold=eps)
    before, after = _weights(src), _weights(out)
    for name in ("w1", "wt", "wg"):
        small = np.abs(before[name]) <= eps
        assert np.all(after[name][small] == 0)
        np.testing.assert_array_equal(after[name][~small], before[name][~small])
    # biases are not weights: never pruned
    np.testing.assert_array_equal(after["bg"], before["bg"])


def test_global_ranking_prunes_the_smallest_over_all_tensors(save_model, tmp_path):
    src = save_model(conv_net())
    out = tmp_path / "out.onnx"
    compress(src, out, prune_sparsity=0.5, global_prune=True)
    before, after = _weights(src), _weights(out)
    names = ("w1", "wt", "wg")
    total = sum(before[n].size for n in names)
    zeros = sum(np.count_nonzero(after[n] == 0) for n in names)
    assert zeros == round(0.5 * total)
    cut_kept = min(np.abs(before[n][after[n] != 0]).min() for n in names)
    cut_pruned = max(np.abs(before[n][after[n] == 0]).max() for n in names)
    assert cut_pruned <= cut_kept


def test_ties_are_broken_deterministically():
    a = np.ones(10, np.float32)
    mask = sparsity_mask(a, 0.3)
    assert mask.tolist() == [True] * 3 + [False] * 7


def test_zero_bias_of_conv_is_dropped(save_model, tmp_path):
    src = save_model(conv_net(zero_bias=True))
    out = tmp_path / "out.onnx"
    result = compress(src, out, prune_threshold=0.0)
    conv = next(n for n in onnx.load(out).graph.node if n.op_type == "Conv")
    assert len(conv.input) == 2
    assert "b1" not in _weights(out)
    assert any("b1" in s for s in result.stripped)


def test_zero_add_is_bypassed_and_outputs_unchanged(save_model, tmp_path):
    src = save_model(embedding_model())
    out = tmp_path / "out.onnx"
    compress(src, out, prune_threshold=0.0)
    model = onnx.load(out)
    assert "Add" not in [n.op_type for n in model.graph.node]
    assert "zero_bias" not in _weights(out)
    ids = np.random.default_rng(0).integers(0, 50, (3, 5)).astype(np.int64)
    a = ort.InferenceSession(str(src)).run(None, {"ids": ids})[0]
    b = ort.InferenceSession(str(out)).run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(a, b)


def test_shared_weight_is_pruned_once():
    model = ir.from_proto(shared_weight_model())
    prune = MagnitudePrunePass(sparsity=0.5)
    prune(model)
    assert [r.name for r in prune.records] == ["w"]
    w = model.graph.initializers["w"].const_value.numpy()
    assert np.count_nonzero(w == 0) == 32


def test_pruned_zeros_stay_zero_after_quantization():
    model = ir.from_proto(conv_net())
    model, result = compress_model(model, CompressOptions(prune_sparsity=0.6, quantize="weights"))
    for rec in result.quantized:
        q = model.graph.initializers[f"{rec.name}_quantized"].const_value.numpy()
        assert np.count_nonzero(q == 0) >= round(0.6 * q.size)
