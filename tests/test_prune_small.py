"""Per-tensor sparsity leaves weights too small to matter dense (methods/prune/small.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import compress
from onnxcomp.graph.weights import find_weights
from onnxcomp.methods.prune.small import dense_small
from onnxcomp.options import LayerOptions


def _model(tmp_path):
    """A 512x512 MatMul (1 MiB) and, on a second input, a 4x4 decode table like YOLOv8's
    DFL ``arange``: 64 bytes, of which 30% is far under 0.1% of the parameter bytes."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((512, 512)).astype(np.float32)
    table = np.arange(16, dtype=np.float32).reshape(4, 4)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "big"], ["y"]),
            helper.make_node("MatMul", ["d", "table"], ["z"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512]),
            helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4]),
        ],
        [numpy_helper.from_array(big, "big"), numpy_helper.from_array(table, "table")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path, big, table


def _zeros(path, name):
    model = onnx.load(path)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return int(np.count_nonzero(arrays[name] == 0))


def test_small_weight_stays_dense_and_is_said(tmp_path):
    src, big, _table = _model(tmp_path)
    out = tmp_path / "out.onnx"
    result = compress(src, out, prune_sparsity=0.3)
    assert _zeros(out, "big") == round(0.3 * big.size)
    assert _zeros(out, "table") == 1  # arange's own zero, nothing cut
    assert any("1 small weights left dense" in n and "table" in n for n in result.notes)


def test_a_recipe_layer_forces_it(tmp_path):
    src, big, _table = _model(tmp_path)
    out = tmp_path / "out.onnx"
    compress(src, out, prune_sparsity=0.3, layers={"table": LayerOptions(prune_sparsity=0.5)})
    assert _zeros(out, "table") == 8
    assert _zeros(out, "big") == round(0.3 * big.size)


def test_global_ranking_needs_no_guard(tmp_path):
    # ranked over both together, arange's values (1..15) are far above N(0, 1)'s 30% cut;
    # its zero is among the smallest and counts toward the total
    src, big, table = _model(tmp_path)
    out = tmp_path / "out.onnx"
    result = compress(src, out, prune_sparsity=0.3, global_prune=True)
    assert _zeros(out, "table") == 1
    assert _zeros(out, "big") + 1 == round(0.3 * (big.size + table.size))
    assert not any("left dense" in n for n in result.notes)


def test_the_share_is_of_the_pruned_bytes(tmp_path):
    import onnx_ir as ir

    src, _big, _table = _model(tmp_path)
    weights = find_weights(ir.load(src))
    total = 512 * 512 * 4 + 16 * 4
    everything = lambda w: True  # noqa: E731
    assert dense_small(weights, 0.3, total, everything, {}) == ["table"]
    # at 1000x the parameter bytes even the big one's 30% is under 0.1%
    assert sorted(dense_small(weights, 0.3, 1000 * total, everything, {})) == ["big", "table"]
    assert dense_small(weights, 0.3, total, lambda w: w.name != "table", {}) == []
    assert dense_small(weights, 0.3, total, everything, {"table": 0.5}) == []
