"""--quantize int4: 4-bit MatMul/Gemm blocks fused by onnxruntime, int4 embedding rows,
int8 for what int4 cannot serve, said per layer."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from model_builders import _init, _model, vin
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.cli import main
from onnxcomp.numerics.blocks import CLIP_RATIOS, expand, quantize_blocks
from onnxcomp.numerics.gptq_blocks import gptq_blocks, output_error
from onnxcomp.pipeline.compress import compress

K, N, V = 256, 128, 300


def transformer_bits(opset: int = 13, seed: int = 0) -> onnx.ModelProto:
    """Gather(table) -> MatMul(w1) -> Tanh -> Gemm(w2, transB) -> Conv(1x1) path, dyn. batch."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "w1"], ["h"], name="mm1"),
        helper.make_node("Tanh", ["h"], ["hr"]),
        helper.make_node("Reshape", ["hr", "shape2d"], ["h2"]),
        helper.make_node("Gemm", ["h2", "w2", "b2"], ["g"], name="gemm", transB=1),
        helper.make_node("Reshape", ["g", "shape4d"], ["g4"]),
        helper.make_node("Conv", ["g4", "wc"], ["out"], name="conv"),
    ]
    inits = [
        _init("table", rng.standard_normal((V, K)).astype(np.float32)),
        _init("w1", (rng.standard_normal((K, N)) * 0.1).astype(np.float32)),
        _init("shape2d", np.array([-1, N], np.int64)),
        _init("w2", (rng.standard_normal((K, N)) * 0.1).astype(np.float32)),
        _init("b2", rng.standard_normal(K).astype(np.float32)),
        _init("shape4d", np.array([-1, K, 1, 1], np.int64)),
        _init("wc", (rng.standard_normal((64, K, 1, 1)) * 0.1).astype(np.float32)),
    ]
    return _model(
        nodes,
        [vin("ids", ["B"], TensorProto.INT64)],
        [vin("out", ["B", 64, 1, 1])],
        inits,
        opset=opset,
    )


def _run(path, ids, optimized=None):
    so = ort.SessionOptions()
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"ids": ids})[0]


def test_block_rounding_error_is_bounded_by_the_block_scale():
    w = np.random.default_rng(1).standard_normal((100, 40)).astype(np.float32)
    for symmetric in (True, False):
        plain = quantize_blocks(w, 32, symmetric=symmetric, search=False)
        assert plain.scale.shape == (4, 40)  # ceil(100 / 32) blocks
        err = np.abs(plain.dequantize() - w)
        assert np.all(err <= expand(plain.scale, 100, 32) / 2 * (1 + 1e-5))
        searched = quantize_blocks(w, 32, symmetric=symmetric)
        # Clipping to a shrunk range costs at most (1 / min ratio - 1) * 7 steps on the edge.
        bound = (7 / min(CLIP_RATIOS) - 7 + 0.5) if symmetric else 15 / min(CLIP_RATIOS)
        assert np.all(np.abs(searched.dequantize() - w) <= expand(searched.scale, 100, 32) * bound)
        assert np.mean((searched.dequantize() - w) ** 2) <= np.mean(err**2)
    assert quantize_blocks(w, 32).q.min() >= -8 and quantize_blocks(w, 32).q.max() <= 7


def test_gptq_blocks_beat_rounding_on_correlated_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 64)) @ rng.standard_normal((64, 64)) * 0.3
    x[:, 5] *= 10
    h = x.T @ x / len(x)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    for symmetric in (True, False):
        rtn = quantize_blocks(w, 16, symmetric=symmetric)
        gptq = gptq_blocks(w, h, 16, symmetric=symmetric)
        assert output_error(w, gptq, h) < output_error(w, rtn, h)


def test_int4_fuses_into_matmulnbits_and_falls_back_per_layer(save_model, tmp_path):
    src = save_model(transformer_bits())
    out = tmp_path / "int4.onnx"
    result = compress(src, out, quantize="int4", block_size=32)
    onnx.checker.check_model(str(out), full_check=True)
    assert "upgraded opset 13 -> 21 for int4 blocks" in result.notes
    bits = {r.name: r.bits for r in result.quantized}
    assert bits == {"table": 4, "w1": 4, "w2": 4, "wc": 8}
    assert "Conv weight" in result.skipped["wc (int4)"]
    # onnxruntime turns both 4-bit weights into MatMulNBits, the table read by its kernel.
    ids = np.array([0, 7, 299], np.int64)
    _run(out, ids, optimized=tmp_path / "opt.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 2
    assert "GatherBlockQuantized" in ops
    assert "DequantizeLinear" not in ops


def test_int4_outputs_match_the_stored_blocks(save_model, tmp_path):
    """The runtime computes with exactly the stored 4-bit weights, and those lie within the
    searched block range of the float weights."""
    model = transformer_bits()
    src = save_model(model)
    out = tmp_path / "int4.onnx"
    compress(src, out, quantize="int4")
    stored = onnx.load(str(out))
    arrays = {t.name: numpy_helper.to_array(t) for t in stored.graph.initializer}
    floats = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w1 = arrays["w1_int4"].astype(np.float32) * expand(arrays["w1_scale"], K, 32)
    bound = (7 / min(CLIP_RATIOS) - 7 + 0.5) * expand(arrays["w1_scale"], K, 32)
    assert np.all(np.abs(w1 - floats["w1"]) <= bound)
    table = arrays["table_int4"].astype(np.float32) * np.repeat(arrays["table_scale"], 32, 1)
    ids = np.array([3, 4], np.int64)
    g = stored.graph
    # Rebuild the first MatMul's output in numpy from the stored codes.
    probe = onnx.helper.make_model(
        onnx.helper.make_graph(
            list(g.node), "p", list(g.input), [vin("h", None)], list(g.initializer)
        ),
        opset_imports=stored.opset_import,
        ir_version=stored.ir_version,
    )
    path = tmp_path / "probe.onnx"
    onnx.save(probe, path)
    h = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["h"], {"ids": ids}
    )[0]
    x = table[ids]
    want = x @ w1
    # MatMulNBits (accuracy level 4, onnxruntime's default for fused DQ) rounds the
    # activations to int8 per block of 32 inputs: at most half a step of max|x_block|/127.
    step = np.repeat(np.abs(x.reshape(len(ids), -1, 32)).max(axis=2) / 127, 32, axis=1)
    bound = (step / 2) @ np.abs(w1) * 1.01 + 1e-4 * np.abs(want).max()
    assert np.all(np.abs(h - want) <= bound)


def test_asymmetric_uses_uint4_with_zero_points(save_model, tmp_path):
    src = save_model(transformer_bits(opset=21))
    out = tmp_path / "int4.onnx"
    result = compress(src, out, quantize="int4", symmetric=False, block_size=64)
    assert not any("upgraded" in n for n in result.notes)
    stored = onnx.load(str(out))
    types = {t.name: t.data_type for t in stored.graph.initializer}
    assert types["w1_int4"] == TensorProto.UINT4 and types["w1_zero_point"] == TensorProto.UINT4
    dq = next(n for n in stored.graph.node if n.op_type == "DequantizeLinear")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 0, "block_size": 64}
    ids = np.array([1, 2], np.int64)
    _run(out, ids, optimized=tmp_path / "opt.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 2


def test_int4_bytes_are_deterministic(save_model, tmp_path):
    src = save_model(transformer_bits())
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    compress(src, a, quantize="int4")
    compress(src, b, quantize="int4")
    assert a.read_bytes() == b.read_bytes()


def test_int4_with_calibration_uses_gptq(save_model, tmp_path):
    src = save_model(transformer_bits())
    calib = tmp_path / "calib.npz"
    np.savez(calib, ids=np.arange(0, V, 7, dtype=np.int64))
    out = tmp_path / "gptq.onnx"
    result = compress(src, out, quantize="int4", calib=str(calib))
    assert any("GPTQ from calibration data" in n for n in result.notes)
    ref = _run(src, np.arange(10, dtype=np.int64))
    got = _run(out, np.arange(10, dtype=np.int64))
    cos = np.sum(ref * got) / np.linalg.norm(ref) / np.linalg.norm(got)
    assert cos > 0.99


def test_int4_cli_and_bad_block_size(save_model, tmp_path, capsys):
    src = save_model(transformer_bits())
    out = tmp_path / "o.onnx"
    assert main(["compress", str(src), "-o", str(out), "--quantize", "int4"]) == 0
    text = capsys.readouterr().out
    assert "not int4: wc (Conv weight: int4 serves MatMul/Gemm only, int8)" in text
    assert "to int4 (3) and int8" in text
    bad = ["compress", str(src), "-o", str(out), "--quantize", "int4", "--block-size", "48"]
    assert main(bad) == 2
    assert "--block-size" in capsys.readouterr().err


def test_int4_codes_pack_two_per_byte():
    q = np.array([[1, -2], [3, -8]], np.int8).astype(ml_dtypes.int4)
    import onnx_ir as ir

    assert ir.tensor(q).tobytes() == bytes([0xE1, 0x83])


def test_recipe_replays_int4_settings(tmp_path):
    from onnxcomp.recipe import load_recipe

    path = tmp_path / "r.toml"
    path.write_text('[compress]\nquantize = "int4"\nblock-size = 64\nsymmetric = false\n')
    options = load_recipe(str(path))
    assert (options.quantize, options.block_size, options.symmetric) == ("int4", 64, False)


def _mixed_setup(tmp_path):
    from model_builders import transformer

    src = tmp_path / "t.onnx"
    onnx.save(transformer(dim=128, ff=256, layers=1), src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, ids=np.random.default_rng(0).integers(0, 64, (16, 12)).astype(np.int64))
    return src, calib


def test_a_layer_takes_int4_inside_an_int8_model(tmp_path):
    from onnxcomp.options import LayerOptions

    src, calib = _mixed_setup(tmp_path)
    out, optimized = tmp_path / "mixed.onnx", tmp_path / "opt.onnx"
    layers = {"l0_f1_w": LayerOptions(precision="int4")}
    compress(src, out, quantize="int8", calib=str(calib), measure=False, layers=layers)
    model = onnx.load(out)
    int4 = [i.name for i in model.graph.initializer if i.data_type == TensorProto.INT4]
    assert len(int4) == 1 and int4[0].startswith("l0_f1_w")
    ids = np.random.default_rng(5).integers(0, 64, (4, 12)).astype(np.int64)
    got = _run(out, ids, optimized)
    ops = [n.op_type for n in onnx.load(optimized).graph.node]
    # the int4 layer runs as MatMulNBits on float activations, the rest on int8 kernels
    assert ops.count("MatMulNBits") == 1 and ("MatMulInteger" in ops or "QLinearMatMul" in ops)
    ref = _run(src, ids)
    cos = np.sum(ref * got) / np.linalg.norm(ref) / np.linalg.norm(got)
    assert cos > 0.99


def test_int4_layers_need_an_int4_or_int8_model(tmp_path, capsys):
    src, _ = _mixed_setup(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[compress]\nquantize = "weights"\n[layers."l0_f1_w"]\nprecision = "int4"\n')
    code = main(["compress", str(src), "-o", str(tmp_path / "o.onnx"), "--recipe", str(recipe)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "layer 'l0_f1_w' asks for int4 weights" in err


def test_auto_latency_ladder_has_int4_between_float_and_int8(tmp_path):
    from onnxcomp.auto.space import build_space

    src, calib = _mixed_setup(tmp_path)
    space = build_space(str(src), objective="latency", has_calib=True)
    assert [s.precision for s in space.ladder][:3] == ["float", "int4", "int8"]
    assert all(s.channels for s in space.ladder[3:])  # then channels removed, at int8
    space.base.calib = str(calib)
    mixed = space.to_options({"l0_f1_w": 1, "l0_q_w": 2})
    assert mixed.quantize == "int8"
    assert mixed.layers["l0_f1_w"].precision == "int4"
    out = tmp_path / "auto_mixed.onnx"
    compress(src, out, mixed)
    assert sum(i.data_type == TensorProto.INT4 for i in onnx.load(out).graph.initializer) == 1
    # the recipe auto would write replays to the same bytes
    from onnxcomp.recipe import load_recipe, save_recipe

    recipe = save_recipe(mixed, tmp_path / "mixed.recipe.toml", base_dir=tmp_path)
    assert 'precision = "int4"' in recipe.read_text()
    again = tmp_path / "replayed.onnx"
    compress(src, again, load_recipe(recipe))
    assert again.read_bytes() == out.read_bytes()


def test_an_outer_scope_weight_read_inside_an_if_branch(tmp_path):
    """Exporters put the network in an If branch reading main-graph initializers (silero-vad
    op18): the 4-bit codes go into the branch, GPTQ falls back to rounding there."""
    rng = np.random.default_rng(0)
    branch = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y_then"], name="gemm_in_branch", transB=1)],
        "then",
        [],
        [vin("y_then", ["B", 128])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y_else"])], "else", [], [vin("y_else", ["B", 128])]
    )
    nodes = [helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)]
    inits = [_init("w", (rng.standard_normal((128, 128)) / 12).astype(np.float32))]
    inputs = [vin("x", ["B", 128]), vin("flag", [], TensorProto.BOOL)]  # not foldable
    src = tmp_path / "if.onnx"
    onnx.save(_model(nodes, inputs, [vin("y", ["B", 128])], inits, opset=17), src)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, 128)).astype(np.float32), flag=np.array(True))
    feed = {"x": rng.standard_normal((4, 128)).astype(np.float32), "flag": np.array(True)}
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    for extra in ({}, {"calib": str(calib)}):
        out = tmp_path / f"if_int4_{len(extra)}.onnx"
        result = compress(src, out, quantize="int4", **extra)
        assert any(r.bits == 4 for r in result.quantized)
        onnx.checker.check_model(str(out), full_check=True)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, feed)[0]
        # 4-bit blocks of 32: relative error a few percent, far from a wrong graph
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.15
