"""Whole attention heads removed by --prune-channels, in the exporter's pattern (Reshape
shapes built from Shape -> Gather -> Unsqueeze -> Concat with constant head counts)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from model_builders import _init, _model, ort_session, vin
from onnx import helper

from onnxcomp.methods.channels.heads import find_heads
from onnxcomp.pipeline.compress import compress

D, H, T = 64, 4, 6
DH = D // H


def mha(dead_heads: tuple[int, ...] = (), seed: int = 0) -> onnx.ModelProto:
    """x [B, T, D] -> one multi-head self-attention block with a residual; the heads in
    ``dead_heads`` have zero output-projection rows (they contribute nothing)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def n(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, name=outs[0] + "_" + op, **kw))
        return outs[0]

    def c(name, arr):
        inits.append(_init(name, np.asarray(arr)))
        return name

    c("i0", np.array(0, np.int64))
    c("i1", np.array(1, np.int64))
    c("ax0", np.array([0], np.int64))
    shape = n("Shape", ["x"], ["x_shape"])
    b = n("Unsqueeze", [n("Gather", [shape, "i0"], ["batch"], axis=0), "ax0"], ["batch1"])
    t = n("Unsqueeze", [n("Gather", [shape, "i1"], ["seq"], axis=0), "ax0"], ["seq1"])

    def heads_of(tag, perm):
        w = c(f"w{tag}", (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32))
        bias = c(f"b{tag}", (0.1 * rng.standard_normal(D)).astype(np.float32))
        y = n("Add", [bias, n("MatMul", ["x", w], [f"{tag}_mm"])], [f"{tag}_lin"])
        dims = [c(f"h_{tag}", np.array([H], np.int64)), c(f"dh_{tag}", np.array([DH], np.int64))]
        hs = n("Concat", [b, t, *dims], [f"{tag}_shape"], axis=0)
        return n("Transpose", [n("Reshape", [y, hs], [f"{tag}_4d"])], [f"{tag}_t"], perm=perm)

    q, k, v = heads_of("q", [0, 2, 1, 3]), heads_of("k", [0, 2, 3, 1]), heads_of("v", [0, 2, 1, 3])
    s = n("Div", [n("MatMul", [q, k], ["qk"]), c("scale", np.float32(np.sqrt(DH)))], ["qk_s"])
    p = n("Softmax", [s], ["p"], axis=-1)
    ctx = n("Transpose", [n("MatMul", [p, v], ["pv"])], ["ctx_t"], perm=[0, 2, 1, 3])
    cs = n("Concat", [b, t, c("d_out", np.array([D], np.int64))], ["ctx_shape"], axis=0)
    ctx = n("Reshape", [ctx, cs], ["ctx"])
    wo = (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
    for h in dead_heads:
        wo[h * DH : (h + 1) * DH] = 0
    o = n("Add", [n("MatMul", [ctx, c("wo", wo)], ["o_mm"]), c("bo", np.zeros(D, np.float32))],
          ["o"])  # fmt: skip
    n("Add", ["x", o], ["y"])
    return _model(nodes, [vin("x", ["B", "T", D])], [vin("y", ["B", "T", D])], inits, opset=17)


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, T, D)).astype(np.float32)


def test_the_exporter_pattern_is_one_head_block():
    (block,) = find_heads(ir.from_proto(mha()))
    assert (block.heads, block.head_dim, block.group.size) == (H, DH, D)
    assert sorted(n.name for n in block.group.producers) == ["k_mm_MatMul", "q_mm_MatMul",
                                                              "v_mm_MatMul"]  # fmt: skip
    assert [n.name for n in block.group.consumers] == ["o_mm_MatMul"]


def test_dead_heads_go_and_the_outputs_stay(tmp_path):
    src, out, calib = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "c.npz"
    onnx.save(mha(dead_heads=(0, 2)), src)
    np.savez(calib, x=_x(32, 1))
    result = compress(src, out, prune_channels=0.5, calib=str(calib))
    assert "channels of o_mm_MatMul (heads): 4 -> 2" in result.notes
    onnx.checker.check_model(str(out), full_check=True)  # shapes consistent after the cut
    w = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}
    assert next(a for k, a in w.items() if k.startswith("wq")).shape == (D, D // 2)
    assert next(a for k, a in w.items() if k.startswith("wo")).shape == (D // 2, D)
    x = _x(5, 7)  # unseen inputs, another batch size
    ref = ort_session(src).run(None, {"x": x})[0]
    got = ort_session(out).run(None, {"x": x})[0]
    # the removed heads contributed exactly zero; float32 reassociation only
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_live_heads_are_repaired_toward_the_teacher(tmp_path):
    src, calib = tmp_path / "m.onnx", tmp_path / "c.npz"
    onnx.save(mha(), src)
    np.savez(calib, x=_x(64, 1))
    x = _x(16, 9)
    ref = ort_session(src).run(None, {"x": x})[0]
    errors = {}
    for keep in (1, 2, 3):
        out = tmp_path / f"o{keep}.onnx"
        compress(src, out, prune_channels=1 - keep / H, calib=str(calib))
        got = ort_session(out).run(None, {"x": x})[0]
        errors[keep] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    # more heads kept, less error; and never more than the attention branch itself
    branch = float(np.linalg.norm(ref - x) / np.linalg.norm(ref))
    assert errors[3] < errors[2] < errors[1] < branch


def mha_gemm(dead_heads: tuple[int, ...] = (), seed: int = 0) -> onnx.ModelProto:
    """The flattened-token export (batch 1): x [1, T, D] -> Reshape([-1, D]) -> Gemm(W, b)
    -> Reshape([1, T, -1, dh]) -> Transpose per Q/K/V (the head count inferred), context
    Reshape([-1, D]) -> Gemm(Wo, transB=1); the heads in ``dead_heads`` have zero
    output-projection columns."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def n(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, name=outs[0] + "_" + op, **kw))
        return outs[0]

    def c(name, arr):
        inits.append(_init(name, np.asarray(arr)))
        return name

    split = c("split", np.array([1, T, -1, DH], np.int64))
    flat = c("flat", np.array([-1, D], np.int64))
    x2 = n("Reshape", ["x", flat], ["x2"])

    def heads_of(tag, perm):
        w = c(f"w{tag}", (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32))
        bias = c(f"b{tag}", (0.1 * rng.standard_normal(D)).astype(np.float32))
        y = n("Gemm", [x2, w, bias], [f"{tag}_gemm"])
        return n("Transpose", [n("Reshape", [y, split], [f"{tag}_4d"])], [f"{tag}_t"], perm=perm)

    q, k, v = heads_of("q", [0, 2, 1, 3]), heads_of("k", [0, 2, 3, 1]), heads_of("v", [0, 2, 1, 3])
    s = n("Mul", [n("MatMul", [q, k], ["qk"]), c("scale", np.float32(DH**-0.5))], ["qk_s"])
    p = n("Softmax", [s], ["p"], axis=-1)
    ctx = n("Transpose", [n("MatMul", [p, v], ["pv"])], ["ctx_t"], perm=[0, 2, 1, 3])
    ctx = n("Reshape", [ctx, flat], ["ctx"])
    wo = (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)  # [out, in]: transB
    for h in dead_heads:
        wo[:, h * DH : (h + 1) * DH] = 0
    o = n("Gemm", [ctx, c("wo", wo), c("bo", np.zeros(D, np.float32))], ["o"], transB=1)
    n("Add", [x2, o], ["y"])
    return _model(nodes, [vin("x", [1, T, D])], [vin("y", [T, D])], inits, opset=17)


def test_gemm_heads_with_flattened_tokens_are_one_head_block():
    (block,) = find_heads(ir.from_proto(mha_gemm()))
    assert (block.heads, block.head_dim, block.group.size) == (H, DH, D)
    assert sorted(n.name for n in block.group.producers) == ["k_gemm_Gemm", "q_gemm_Gemm",
                                                              "v_gemm_Gemm"]  # fmt: skip
    assert [n.name for n in block.group.consumers] == ["o_Gemm"]
    assert block.counts == []  # the head count is -1 in the Reshapes: nothing to rewrite


def test_dead_gemm_heads_go_and_the_outputs_stay(tmp_path):
    src, out, calib = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "c.npz"
    onnx.save(mha_gemm(dead_heads=(1, 3)), src)
    np.savez(calib, x=_x(32, 1))
    result = compress(src, out, prune_channels=0.5, calib=str(calib))
    assert "channels of o_Gemm (heads): 4 -> 2" in result.notes
    onnx.checker.check_model(str(out), full_check=True)
    w = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}
    assert next(a for k, a in w.items() if k.startswith("wq")).shape == (D, D // 2)
    assert next(a for k, a in w.items() if k.startswith("bq")).shape == (D // 2,)
    assert next(a for k, a in w.items() if k.startswith("wo")).shape == (D, D // 2)
    x = _x(1, 7)
    ref = ort_session(src).run(None, {"x": x})[0]
    got = ort_session(out).run(None, {"x": x})[0]
    # the removed heads contributed exactly zero; float32 reassociation only
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def token_mlp() -> onnx.ModelProto:
    """x [B, T, 16] -> MatMul -> Relu -> MatMul, times the 0/1 ``attention_mask`` [B, T]:
    padding positions come out zero whatever the weights."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="fc2"),
        helper.make_node("Unsqueeze", ["attention_mask", "axes"], ["m"], name="unsq"),
        helper.make_node("Mul", ["o", "m"], ["y"], name="masked"),
    ]
    inits = [
        _init("w1", rng.standard_normal((16, 64)).astype(np.float32) * 0.3),
        _init("w2", rng.standard_normal((64, 16)).astype(np.float32) * 0.3),
        _init("axes", np.array([-1], np.int64)),
    ]
    inputs = [vin("x", ["B", "T", 16]), vin("attention_mask", ["B", "T"])]
    return _model(nodes, inputs, [vin("y", ["B", "T", 16])], inits, opset=17)


def test_embed_task_leaves_padding_rows_out_of_the_channel_fit(tmp_path):
    """Texts padded with garbage rows behind a mask prune to the same weights as the same
    texts unpadded under --task embed (the Gram matrices hold the same rows), and to other
    weights without it (the padding counted)."""
    src = tmp_path / "m.onnx"
    onnx.save(token_mlp(), src)
    rng = np.random.default_rng(3)
    padded, plain = tmp_path / "padded", tmp_path / "plain"
    padded.mkdir()
    plain.mkdir()
    for i in range(24):
        real = int(rng.integers(2, 8))
        x = rng.standard_normal((1, 8, 16)).astype(np.float32)
        x[:, real:] = 10 * rng.standard_normal((1, 8 - real, 16))  # padding: large garbage
        mask = (np.arange(8) < real).astype(np.float32)[None]
        np.savez(padded / f"{i:02d}.npz", x=x, attention_mask=mask)
        np.savez(plain / f"{i:02d}.npz", x=x[:, :real], attention_mask=mask[:, :real])

    def weights(calib, **kw) -> dict[str, np.ndarray]:
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}.onnx"
        compress(src, out, prune_channels=0.5, calib=str(calib), **kw)
        return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}

    masked, unpadded = weights(padded, task="embed"), weights(plain, task="embed")
    counted = weights(padded)
    assert masked.keys() == unpadded.keys()
    for name in masked:  # the same rows in the same order: float64 sums agree to rounding
        np.testing.assert_allclose(masked[name], unpadded[name], rtol=1e-5, atol=1e-6)
    assert any(
        masked[k].shape != counted[k].shape or not np.allclose(masked[k], counted[k])
        for k in masked
    )
