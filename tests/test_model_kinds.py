"""Every place weights hide comes out quantized, valid, runnable and close to the original."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_builders import (
    conv_net,
    embedding_model,
    if_model,
    loop_model,
    ml_domain_model,
    mlp_with_constants,
    shared_weight_model,
)

from onnxcomp import compress


def _feed(name: str):
    rng = np.random.default_rng(7)
    if name == "embedding":
        return {"ids": rng.integers(0, 50, (4, 6)).astype(np.int64)}
    if name == "if_then":
        return {"x": rng.standard_normal((4, 8)).astype(np.float32), "cond": np.array(True)}
    if name == "loop":
        return {"x": rng.standard_normal((4, 8)).astype(np.float32), "trips": np.array(3)}
    if name == "if_else":
        return {"x": rng.standard_normal((4, 8)).astype(np.float32), "cond": np.array(False)}
    shapes = {"conv": (4, 3, 8, 8), "constants": (4, 16), "shared": (4, 8), "ml": (4, 16)}
    return {"x": rng.standard_normal(shapes[name]).astype(np.float32)}


BUILDERS = {
    "conv": conv_net,
    "constants": mlp_with_constants,
    "shared": shared_weight_model,
    "ml": ml_domain_model,
    "embedding": embedding_model,
    "if_then": if_model,
    "if_else": if_model,
    "loop": loop_model,
}


def _run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _dq_weights(model: onnx.ModelProto) -> list[str]:
    names = []
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        names += [n.input[0] for n in g.node if n.op_type == "DequantizeLinear"]
        int8 = {t.name for t in g.initializer if t.data_type == onnx.TensorProto.INT8}
        names += [n.input[0] for n in g.node if n.op_type == "Gather" and n.input[0] in int8]
        # decoded once at load: Cast(int8) * scale (methods/weights/decode_at_load.py)
        names += [n.input[0] for n in g.node if n.op_type == "Cast" and n.input[0] in int8]
        for n in g.node:
            graphs += [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    return names


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_weights_quantized_valid_and_close(save_model, tmp_path, kind):
    src = save_model(BUILDERS[kind]())
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights")
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(out)
    assert len(_dq_weights(model)) == len(result.quantized) >= 1
    feed = _feed(kind)
    for ref, new in zip(_run(src, feed), _run(out, feed), strict=True):
        if ref.dtype.kind == "f":
            cos = np.dot(ref.ravel(), new.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(new))
            assert cos > 0.999
        else:
            np.testing.assert_array_equal(ref, new)


def test_weights_in_constants_and_constant_subgraphs_are_found(save_model, tmp_path):
    src = save_model(mlp_with_constants())
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights")
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "Constant" not in ops and "Transpose" not in ops
    assert len(result.quantized) == 2


def test_if_branch_weights_are_quantized_inside_the_branches(save_model, tmp_path):
    src = save_model(if_model())
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights")
    assert len(result.quantized) == 2
    assert len(_dq_weights(onnx.load(out))) == 2


def test_shared_weight_is_quantized_once(save_model, tmp_path):
    src = save_model(shared_weight_model())
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights")
    assert [r.name for r in result.quantized] == ["w"]
    # One int8 tensor, decoded once (small MatMuls: decoded at load, see decode_at_load)
    graph = onnx.load(out).graph
    decoders = [n for n in graph.node if n.op_type in ("DequantizeLinear", "Cast")]
    assert len(decoders) == 1


def test_custom_domain_metadata_and_interface_are_kept(save_model, tmp_path):
    src = save_model(ml_domain_model())
    out = tmp_path / "out.onnx"
    compress(src, out, quantize="weights", prune_sparsity=0.3)
    before, after = onnx.load(src), onnx.load(out)
    assert {p.key: p.value for p in after.metadata_props} == {"classes": "cat,dog,bird"}
    assert any(o.domain == "ai.onnx.ml" for o in after.opset_import)
    for a, b in (
        (before.graph.input, after.graph.input),
        (before.graph.output, after.graph.output),
    ):
        assert [v.name for v in a] == [v.name for v in b]
        assert [str(v.type) for v in a] == [str(v.type) for v in b]


def test_opset_12_is_upgraded_and_says_so(save_model, tmp_path):
    src = save_model(embedding_model())
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights")
    assert any("12 -> 13" in n for n in result.notes)
    model = onnx.load(out)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 13
    # dynamic axes survive the upgrade
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "T"]


def test_opset_11_conv_net_per_channel_axes(save_model, tmp_path):
    src = save_model(conv_net(opset=11))
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights")
    axes = {r.name: r.axis for r in result.quantized}
    assert axes == {"w1": 0, "wt": 1, "wg": 0}  # ConvTranspose: channels on axis 1
    graph = onnx.load(out).graph
    dims = {t.name: list(t.dims) for t in graph.initializer}
    made_by = {o: n for n in graph.node for o in n.output}
    scales = {}  # decoded weight name -> dims of its scale: Mul(Cast(int8), scale)
    for mul in (n for n in graph.node if n.op_type == "Mul" and n.input[0] in made_by):
        cast = made_by[mul.input[0]]
        if cast.op_type == "Cast" and cast.input[0].endswith("_quantized"):
            scales[mul.output[0]] = dims[mul.input[1]]
    # All decoded at load (scale shaped to broadcast; the Gemm's is too small for MatMulNBits)
    # and the decoded weights keep their original names.
    assert scales == {"w1": [8, 1, 1, 1], "wt": [1, 6, 1, 1], "wg": [10, 1]}


def test_per_tensor_option_gives_one_scale(save_model, tmp_path):
    src = save_model(conv_net())
    out = tmp_path / "out.onnx"
    result = compress(src, out, quantize="weights", per_tensor=True)
    assert all(r.axis is None for r in result.quantized)
    scales = [t for t in onnx.load(out).graph.initializer if t.name.endswith("_scale")]
    assert all(list(t.dims) == [] for t in scales)


def test_matmul_error_within_derived_bound(save_model, tmp_path):
    """|y - y'| <= sum_k |x_k| * scale_n / 2 for a single MatMul (per-channel scales)."""
    src = save_model(shared_weight_model())
    out = tmp_path / "out.onnx"
    compress(src, out, quantize="weights")
    w = onnx.numpy_helper.to_array(onnx.load(src).graph.initializer[0])
    scale = np.abs(w).max(axis=0) / 127
    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    ref = np.maximum(x @ w, 0)
    wq = np.rint(w / scale) * scale
    got_first = np.maximum(x @ wq, 0)
    bound = np.abs(x).sum(axis=1, keepdims=True) * scale / 2 + 1e-5
    assert np.all(np.abs(got_first - ref) <= bound)
    full_ref = _run(src, {"x": x})[0]
    full_new = _run(out, {"x": x})[0]
    np.testing.assert_allclose(full_new, np.maximum(x @ wq, 0) @ wq, rtol=1e-4, atol=1e-4)
    assert np.abs(full_new - full_ref).max() > 0  # it really did change


def _expected_embedding_output(feed):
    table = onnx.numpy_helper.to_array(embedding_model().graph.initializer[0])
    scale = np.abs(table).max(axis=1) / 127
    ref_rows = np.rint(table / scale[:, None]) * scale[:, None]
    w = onnx.numpy_helper.to_array(embedding_model().graph.initializer[1])
    w_scale = np.abs(w).max(axis=0) / 127
    return np.maximum(ref_rows[feed["ids"]] @ (np.rint(w / w_scale) * w_scale), 0)


def test_small_embedding_table_is_decoded_once_at_load(save_model, tmp_path):
    """A 50x16 table: int8 in the file, a float constant after onnxruntime's load-time
    folding, so each lookup is one float Gather (no per-run rescale chain)."""
    src = save_model(embedding_model())
    out = tmp_path / "out.onnx"
    compress(src, out, quantize="weights")
    model = onnx.load(out)
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    assert any(onnx.numpy_helper.to_array(t).shape == (50, 16) for t in model.graph.initializer
               if t.name in int8)  # fmt: skip
    assert not [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in int8]
    feed = _feed("embedding")
    np.testing.assert_allclose(
        _run(out, feed)[0], _expected_embedding_output(feed), rtol=1e-5, atol=1e-5
    )


def test_embedding_rows_are_gathered_before_dequantizing(save_model, tmp_path, monkeypatch):
    from onnxcomp.methods.weights import gather_dequantize

    monkeypatch.setattr(gather_dequantize, "MIN_TABLE_ELEMENTS", 1)  # as if it were big
    src = save_model(embedding_model())
    out = tmp_path / "out.onnx"
    compress(src, out, quantize="weights")
    model = onnx.load(out)
    gathers = [n for n in model.graph.node if n.op_type == "Gather"]
    assert "table_quantized" in [g.input[0] for g in gathers]
    assert not any(
        n.op_type == "DequantizeLinear" and n.input[0] == "table_quantized"
        for n in model.graph.node
    )
    feed = _feed("embedding")
    np.testing.assert_allclose(
        _run(out, feed)[0], _expected_embedding_output(feed), rtol=1e-5, atol=1e-5
    )
