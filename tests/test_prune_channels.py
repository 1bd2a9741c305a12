"""Structured pruning: dependency groups, the rewrite, the least-squares repair, the CLI.

Each channel-tying pattern is built small; when the channels it removes were exactly zero
in the original, the pruned model must give the same outputs (float rounding only), be
valid (checker, full shape inference) and run in onnxruntime.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from model_builders import _init, _model, vin
from onnx import helper

from onnxcomp.cli import main
from onnxcomp.io.data import input_specs, open_data
from onnxcomp.methods.channels.groups import find_groups
from onnxcomp.methods.channels.prune import PruneChannelsPass, kept_count
from onnxcomp.passes.report import CompressReport
from onnxcomp.passes.shape_inference import InferShapesPass

N = 64  # calibration samples
# Outputs of the kept channels are computed the same way: only float re-association
# (a smaller dot product, a solve returning the same weights) separates the two.
ATOL = 1e-4


def _run(model: onnx.ModelProto | bytes, feed: dict) -> list[np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _prune(proto: onnx.ModelProto, ratio: float, feed: dict) -> tuple[onnx.ModelProto, list]:
    model = ir.from_proto(proto)
    report = CompressReport()
    batches = [{k: v[i : i + 16] for k, v in feed.items()} for i in range(0, N, 16)]
    data = lambda m: open_data(batches, input_specs(m))  # noqa: E731
    PruneChannelsPass(ratio, data, report=report, min_channels=1)(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)  # includes strict shape inference
    return out, report.notes


def _x(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, *shape)).astype(np.float32)


def _weight_size(proto: onnx.ModelProto, name: str) -> tuple[int, ...]:
    for init in proto.graph.initializer:
        if init.name == name:
            return tuple(init.dims)
    raise KeyError(name)


def mlp(dead: int = 0, seed: int = 0) -> onnx.ModelProto:
    """Gemm -> Relu -> Gemm(transB) -> Relu -> MatMul + Add; ``dead`` hidden units of the
    first layer are exactly zero (weights and bias)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((10, 32)).astype(np.float32) * 0.5
    b1 = rng.standard_normal(32).astype(np.float32) * 0.1
    w1[:, :dead] = 0
    b1[:dead] = 0
    w2 = rng.standard_normal((16, 32)).astype(np.float32) * 0.3  # transB: [out, in]
    w3 = rng.standard_normal((16, 4)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"], name="fc2", transB=1),
        helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "w3"], ["m3"], name="fc3"),
        helper.make_node("Add", ["m3", "b3"], ["y"], name="fc3_bias"),
    ]
    inits = [
        _init("w1", w1),
        _init("b1", b1),
        _init("w2", w2),
        _init("b2", np.zeros(16, np.float32)),
        _init("w3", w3),
        _init("b3", np.ones(4, np.float32)),
    ]
    return _model(nodes, [vin("x", ["n", 10])], [vin("y", ["n", 4])], inits)


def test_mlp_dead_units_removed_outputs_unchanged():
    proto = mlp(dead=16)
    feed = {"x": _x(10)}
    pruned, notes = _prune(proto, 0.5, feed)
    # fc1's 32 units -> 16 (the dead ones), fc2's 16 -> 8; fc3 feeds the graph output.
    assert _weight_size(pruned, "w1") == (10, 16)
    assert _weight_size(pruned, "w2") == (8, 16)
    assert _weight_size(pruned, "w3") == (8, 4)
    assert any("fc3" in n and "graph output" in n for n in notes)
    assert any("parameters" in n and "MACs" in n for n in notes)
    # Only fc1 lost exactly-zero units; compare on a model pruned at fc1 alone.
    only_fc1 = mlp(dead=16)
    model = ir.from_proto(only_fc1)
    batches = [feed]
    PruneChannelsPass(
        0.0,
        lambda m: open_data(batches, input_specs(m)),
        ratio_for=lambda g: 0.5 if g.name == "fc1" else None,
    )(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    test = {"x": _x(10, seed=7)}
    np.testing.assert_allclose(_run(out, test)[0], _run(only_fc1, test)[0], atol=ATOL)


def test_repair_beats_plain_removal():
    """Least squares on the calibration data: closer to the teacher on unseen inputs than
    the same channels dropped with the original weights."""
    proto = mlp(dead=0, seed=3)
    feed = {"x": _x(10)}
    test = {"x": _x(10, seed=9)}
    ref = _run(proto, test)[0]
    errors = []
    for repair in (False, True):
        model = ir.from_proto(proto)
        PruneChannelsPass(
            0.5, lambda m: open_data([feed], input_specs(m)), repair=repair, min_channels=1
        )(model)
        errors.append(float(np.mean((_run(ir.to_proto(model), test)[0] - ref) ** 2)))
    assert errors[1] < 0.7 * errors[0]


def conv_bn_net(dead: int = 0) -> onnx.ModelProto:
    """Conv -> BatchNorm -> Relu -> MaxPool -> Pad -> Conv -> GlobalAveragePool -> Flatten
    -> Gemm. The second Conv's channels reach Flatten: left whole, with the reason."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3
    w1[:dead] = 0
    scale = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32) * 0.1
    mean = rng.standard_normal(16).astype(np.float32) * 0.1
    var = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    bias[:dead] = 0
    mean[:dead] = 0
    w2 = rng.standard_normal((8, 16, 3, 3)).astype(np.float32) * 0.2
    w3 = rng.standard_normal((8, 5)).astype(np.float32)
    nodes = [
        # A Constant node, as some exporters (Paddle) write BN parameters.
        helper.make_node("Constant", [], ["s"], name="scale", value=_init("s", scale)),
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["bn"], name="bn1"),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Pad", ["p1", "pads"], ["pd"], name="pad1"),
        helper.make_node("Conv", ["pd", "w2", "cb2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3"], ["y"], name="fc"),
    ]  # fmt: skip
    inits = [
        _init("w1", w1), _init("b", bias), _init("m", mean), _init("v", var),
        _init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        _init("w2", w2), _init("cb2", np.zeros(8, np.float32)), _init("w3", w3),
    ]  # fmt: skip
    return _model(nodes, [vin("x", ["n", 3, 8, 8])], [vin("y", ["n", 5])], inits)


def test_conv_bn_pool_pad_chain_then_pooled_flatten():
    proto = conv_bn_net(dead=8)
    feed = {"x": _x(3, 8, 8)}
    pruned, notes = _prune(proto, 0.5, feed)
    assert _weight_size(pruned, "w1") == (8, 3, 3, 3)
    scale = next(n for n in pruned.graph.node if n.output[0] == "s")
    assert tuple(scale.attribute[0].t.dims) == (8,)
    # conv2's channels pass GlobalAveragePool and Flatten (one feature each) into the Gemm
    assert _weight_size(pruned, "w2") == (4, 8, 3, 3)
    assert _weight_size(pruned, "w3") == (4, 5)
    assert not any("conv2 kept" in n for n in notes)
    test = {"x": _x(3, 8, 8, seed=5)}
    # conv2's channels were not dead: the repaired Gemm differs, conv1's exact part agrees
    assert _run(pruned, test)[0].shape == _run(proto, test)[0].shape


def flatten_head(op: str, dead: int = 0, shape=(0, -1)) -> onnx.ModelProto:
    """Conv -> Relu -> Flatten (or Reshape to ``shape``) -> Gemm(transB) -> Relu -> MatMul:
    each of the Conv's 6 channels is a run of 4 x 4 = 16 of the Gemm's 96 input features;
    ``dead`` channels of the Conv (and half of fc1's units) are exactly zero."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((6, 2, 3, 3)).astype(np.float32) * 0.4
    b1 = rng.standard_normal(6).astype(np.float32) * 0.1
    w1[:dead], b1[:dead] = 0, 0
    w2 = rng.standard_normal((10, 96)).astype(np.float32) * 0.2
    w2[:5] = 0
    w3 = rng.standard_normal((10, 3)).astype(np.float32) * 0.3
    flat = (
        helper.make_node("Flatten", ["r1"], ["f"], name="flat")
        if op == "Flatten"
        else helper.make_node("Reshape", ["r1", "shape"], ["f"], name="flat")
    )
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        flat,
        helper.make_node("Gemm", ["f", "w2"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "w3"], ["y"], name="fc2"),
    ]  # fmt: skip
    inits = [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("w3", w3)]
    if op == "Reshape":
        inits.append(_init("shape", np.array(shape, np.int64)))
    return _model(nodes, [vin("x", ["n", 2, 8, 8])], [vin("y", ["n", 3])], inits)


@pytest.mark.parametrize(
    ("op", "shape"), [("Flatten", None), ("Reshape", (0, -1)), ("Reshape", (-1, 96))]
)
def test_flatten_into_a_gemm_cuts_runs_of_features(op, shape):
    proto = flatten_head(op, dead=3, shape=shape)
    feed = {"x": _x(2, 8, 8)}
    pruned, _ = _prune(proto, 0.5, feed)
    assert _weight_size(pruned, "w1") == (3, 2, 3, 3)
    assert _weight_size(pruned, "w2")[1] == 3 * 16  # rows of the kept channels' runs
    if shape == (-1, 96):  # the literal feature count follows the channels
        target = next(t for t in pruned.graph.initializer if t.name == "shape")
        assert onnx.numpy_helper.to_array(target).tolist() == [-1, 48]
    test = {"x": _x(2, 8, 8, seed=7)}
    np.testing.assert_allclose(_run(pruned, test)[0], _run(proto, test)[0], atol=ATOL)


def test_reshape_that_folds_the_batch_in_is_left_whole():
    model = ir.from_proto(flatten_head("Reshape", shape=(2, -1)))  # the batch is symbolic
    InferShapesPass()(model)
    conv = next(g for g in find_groups(model) if g.name == "conv1")
    assert conv.blocked is not None and "Reshape flat" in conv.blocked


def residual_net(dead: int = 0, from_input: bool = False) -> onnx.ModelProto:
    """Two branches joined by Add (one group), then Relu -> Conv. ``from_input``: the second
    branch is the graph input itself, which no layer produces (the group stays whole)."""
    rng = np.random.default_rng(1)
    wa = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    wb = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    wc = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    wd = rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3
    wb[:dead] = 0
    wc[:dead] = 0
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conva", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relua"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="convb"),
        helper.make_node("Conv", ["x", "wc"], ["c"], name="convc"),
        helper.make_node("Add", ["b", "x" if from_input else "c"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["rs"], name="relus"),
        helper.make_node("Conv", ["rs", "wd"], ["y"], name="convd"),
    ]
    inits = [_init("wa", wa), _init("wb", wb), _init("wc", wc), _init("wd", wd)]
    return _model(nodes, [vin("x", ["n", 8, 6, 6])], [vin("y", ["n", 4, 6, 6])], inits)


def test_residual_add_is_one_group_pruned_together():
    groups = {g.name: g for g in find_groups(ir.from_proto(residual_net()))}
    joined = groups["convb"]
    assert {n.name for n in joined.producers} == {"convb", "convc"}
    assert [n.name for n in joined.consumers] == ["convd"] and joined.blocked is None
    proto = residual_net(dead=4)
    model = ir.from_proto(proto)
    PruneChannelsPass(
        0.0,
        lambda m: open_data([{"x": _x(8, 6, 6)}], input_specs(m)),
        ratio_for=lambda g: 0.5 if g.name == "convb" else None,
    )(model)
    pruned = ir.to_proto(model)
    onnx.checker.check_model(pruned, full_check=True)
    assert _weight_size(pruned, "wb")[0] == _weight_size(pruned, "wc")[0] == 4
    assert _weight_size(pruned, "wd") == (4, 4, 1, 1)
    test = {"x": _x(8, 6, 6, seed=4)}
    np.testing.assert_allclose(_run(pruned, test)[0], _run(proto, test)[0], atol=ATOL)


def test_residual_with_graph_input_left_whole_with_reason():
    proto = residual_net(from_input=True)
    pruned, notes = _prune(proto, 0.5, {"x": _x(8, 6, 6)})
    assert _weight_size(pruned, "wb") == (8, 4, 1, 1)  # output channels kept, inputs cut
    assert any("convb kept" in n and "no prunable layer produces" in n for n in notes)
    assert _weight_size(pruned, "wa")[0] == 4  # conva's own group is still pruned


def depthwise_net(dead: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((8, 3, 1, 1)).astype(np.float32) * 0.3
    w1[:dead] = 0
    dw = rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="pw1"),
        helper.make_node("Clip", ["a", "lo", "hi"], ["r"], name="relu6"),
        helper.make_node("Conv", ["r", "dw", "dwb"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["rd"], name="relud"),
        helper.make_node("Conv", ["rd", "w2"], ["y"], name="pw2"),
    ]
    inits = [
        _init("w1", w1), _init("lo", np.array(0, np.float32)), _init("hi", np.array(6, np.float32)),
        _init("dw", dw), _init("dwb", np.zeros(8, np.float32)), _init("w2", w2),
    ]  # fmt: skip
    return _model(nodes, [vin("x", ["n", 3, 5, 5])], [vin("y", ["n", 4, 5, 5])], inits)


def test_depthwise_conv_carries_the_channels():
    proto = depthwise_net(dead=4)
    pruned, _ = _prune(proto, 0.5, {"x": _x(3, 5, 5)})
    assert _weight_size(pruned, "dw") == (4, 1, 3, 3)
    dw = next(n for n in pruned.graph.node if n.name == "dw")
    assert helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 4
    test = {"x": _x(3, 5, 5, seed=2)}
    np.testing.assert_allclose(_run(pruned, test)[0], _run(proto, test)[0], atol=ATOL)


def ffn(dead: int = 0) -> onnx.ModelProto:
    """The Hugging Face BERT FFN as exported: MatMul + bias, GELU spelled with Div/Erf/Add/
    Mul/Mul (x appears twice: one group with itself), MatMul + bias, residual Add with the
    block's input, LayerNormalization."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((16, 64)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(64).astype(np.float32) * 0.1
    w1[:, :dead] = 0
    b1[:dead] = 0
    w2 = rng.standard_normal((64, 16)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="intermediate"),
        helper.make_node("Add", ["b1", "m1"], ["h"], name="intermediate_bias"),
        helper.make_node("Div", ["h", "sqrt2"], ["hd"], name="gelu_div"),
        helper.make_node("Erf", ["hd"], ["e"], name="gelu_erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="gelu_add"),
        helper.make_node("Mul", ["h", "e1"], ["g"], name="gelu_mul"),
        helper.make_node("Mul", ["g", "half"], ["g2"], name="gelu_half"),
        helper.make_node("MatMul", ["g2", "w2"], ["m2"], name="output"),
        helper.make_node("Add", ["b2", "m2"], ["o"], name="output_bias"),
        helper.make_node("Add", ["o", "x"], ["s"], name="residual"),
        helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], name="ln", axis=-1),
    ]
    inits = [
        _init("w1", w1), _init("b1", b1), _init("w2", w2),
        _init("b2", np.zeros(16, np.float32)), _init("sqrt2", np.array(1.4142135, np.float32)),
        _init("one", np.array(1.0, np.float32)), _init("half", np.array(0.5, np.float32)),
        _init("gamma", np.ones(16, np.float32)), _init("beta", np.zeros(16, np.float32)),
    ]  # fmt: skip
    return _model(nodes, [vin("x", ["b", "s", 16])], [vin("y", ["b", "s", 16])], inits)


def test_transformer_ffn_neurons_through_exported_gelu():
    proto = ffn(dead=32)
    pruned, notes = _prune(proto, 0.5, {"x": _x(5, 16)})
    assert _weight_size(pruned, "w1") == (16, 32) and _weight_size(pruned, "w2") == (32, 16)
    assert any("output kept" in n for n in notes)  # residual with the block input
    test = {"x": _x(5, 16, seed=3)}
    np.testing.assert_allclose(_run(pruned, test)[0], _run(proto, test)[0], atol=ATOL)


def test_kept_counts_are_aligned_and_never_empty():
    assert kept_count(10, 0.99) == 1
    assert kept_count(1536, 0.5) == 768
    assert kept_count(100, 0.3) == 72  # 70 kept, rounded up to a multiple of 8
    assert kept_count(512, 0.0) == 512


def test_digits_mlp_half_the_parameters_within_one_point(tmp_path):
    pytest.importorskip("sklearn")
    from onnxcomp.cli.demo import build_digits

    model, test, calib = build_digits(tmp_path)
    out = tmp_path / "small.onnx"
    assert main([
        "compress", str(model), "-o", str(out), "--prune-channels", "0.5", "--calib", str(calib)
    ]) == 0  # fmt: skip
    onnx.checker.check_model(str(out), full_check=True)
    params = [
        sum(int(np.prod(i.dims)) for i in onnx.load(str(p)).graph.initializer) for p in (model, out)
    ]
    assert params[0] >= 2 * params[1]
    data = np.load(test)
    feed = {"pixels": data["pixels"]}
    acc = [
        float(np.mean(_run(onnx.load(str(p)), feed)[0].argmax(1) == data["label"]))
        for p in (model, out)
    ]
    assert acc[0] - acc[1] <= 0.01


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prune-channels", "0.5"], "--prune-channels needs calibration data"),
        (["--prune-channels", "1.5", "--calib", "x.npz"], "--prune-channels must be in [0, 1)"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, args, message):
    model = tmp_path / "m.onnx"
    onnx.save(mlp(), model)
    assert main(["compress", str(model), "-o", str(tmp_path / "o.onnx"), *args]) == 2
    assert message in capsys.readouterr().err


def test_recipe_prunes_one_layer(tmp_path):
    model, calib = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(mlp(), model)
    np.savez(calib, x=_x(10))
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'version = 1\n[compress]\ncalib = "{calib}"\n[layers.fc2]\nprune_channels = 0.5\n'
    )
    out = tmp_path / "o.onnx"
    assert main(["compress", str(model), "-o", str(out), "--recipe", str(recipe)]) == 0
    pruned = onnx.load(str(out))
    assert _weight_size(pruned, "w1") == (10, 32)  # fc1 untouched
    assert _weight_size(pruned, "w2") == (8, 32) and _weight_size(pruned, "w3") == (8, 4)


def test_debug_lists_removed_channels(tmp_path, capsys):
    model, calib, out = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "o.onnx"
    onnx.save(mlp(), model)
    np.savez(calib, x=_x(10))
    recipe = tmp_path / "r.toml"  # per layer: applies below the global ratio's min width
    recipe.write_text(f'version = 1\n[compress]\ncalib = "{calib}"\n[layers.Gemm]\n'
                      "prune_channels = 0.5\n")  # fmt: skip
    assert main(["compress", str(model), "-o", str(out), "--recipe", str(recipe)]) == 0
    capsys.readouterr()
    assert main(["debug", str(model), str(out), "--data", str(calib)]) == 0
    text = capsys.readouterr().out
    assert "channels removed" in text and "h1 32 -> 16" in text and "h2 16 -> 8" in text
    # the file itself says it: inspect needs no original to compare with
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "removed channels (--prune-channels): 2 layers" in text
    assert "  fc1: 32 -> 16" in text and "  fc2: 16 -> 8" in text
    again = tmp_path / "again.onnx"  # a second run keeps the first "before"
    assert main(["compress", str(out), "-o", str(again), "--recipe", str(recipe)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(again), "--json"]) == 0
    removed = json.loads(capsys.readouterr().out)["removed_channels"]
    assert removed["fc1"] == [32, 8] and removed["fc2"] == [16, 4]


def test_bias_added_by_repair_is_cut_with_the_layer():
    """A bias-less Conv reading pruned channels gets a bias from the repair (the mean of
    what was removed); when its own outputs are pruned too, that bias is cut with them."""
    rng = np.random.default_rng(4)
    ws = [rng.standard_normal(s).astype(np.float32) * 0.3 for s in
          [(16, 3, 3, 3), (16, 16, 3, 3), (4, 16, 1, 1)]]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="c0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="r0"),
        helper.make_node("Conv", ["ra", "w1"], ["b"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["rb"], name="r1"),
        helper.make_node("Conv", ["rb", "w2"], ["y"], name="c2"),
    ]
    inits = [_init(f"w{i}", w) for i, w in enumerate(ws)]
    proto = _model(nodes, [vin("x", ["n", 3, 6, 6])], [vin("y", ["n", 4, 6, 6])], inits)
    pruned, _ = _prune(proto, 0.5, {"x": _x(3, 6, 6)})
    c1 = next(n for n in pruned.graph.node if n.name == "c1")
    assert len(c1.input) == 3 and _weight_size(pruned, c1.input[2]) == (8,)
    test = {"x": _x(3, 6, 6, seed=8)}
    ref = _run(proto, test)[0]
    assert np.mean((_run(pruned, test)[0] - ref) ** 2) < np.mean(ref**2)


def test_global_ratio_leaves_narrow_groups_whole():
    model = ir.from_proto(mlp())  # 32 and 16 hidden units: below MIN_CHANNELS
    PruneChannelsPass(0.5, lambda m: open_data([{"x": _x(10)}], input_specs(m)))(model)
    assert model.graph.initializers["w1"].const_value.shape == (10, 32)


def dense_block(dead: bool = True, untraced: bool = False) -> onnx.ModelProto:
    """DenseNet-style: conv1 (8) and conv2 (6) concatenated -> conv5 (5) reads that; a
    second Concat of all three features -> BN -> Relu -> conv3 -> pooled graph output.
    conv1's output is also read by conv4 alone. With ``dead``, 4 + 3 + 2 of the 19
    channels are exactly zero (weights, bias, and the BN shift that follows)."""
    rng = np.random.default_rng(4)

    def conv(name, cout, cin, k):
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.3
        b = rng.standard_normal(cout).astype(np.float32) * 0.1
        w[:k], b[:k] = 0, 0
        return [_init(f"{name}_w", w), _init(f"{name}_b", b)]

    n_dead = (4, 3, 2) if dead else (0, 0, 0)
    inits = [*conv("c1", 8, 3, n_dead[0]), *conv("c2", 6, 3, n_dead[1])]
    inits += [*conv("c5", 5, 14, n_dead[2]), *conv("c3", 4, 19, 0), *conv("c4", 2, 8, 0)]
    gamma = rng.uniform(0.5, 1.5, 19).astype(np.float32)
    beta = rng.standard_normal(19).astype(np.float32) * 0.1
    mean = rng.standard_normal(19).astype(np.float32) * 0.1
    dead_idx = [*range(n_dead[0]), *range(8, 8 + n_dead[1]), *range(14, 14 + n_dead[2])]
    beta[dead_idx], mean[dead_idx] = 0, 0
    inits += [_init("g", gamma), _init("be", beta), _init("mu", mean),
              _init("var", rng.uniform(0.5, 1.5, 19).astype(np.float32))]  # fmt: skip
    second = "x" if untraced else "c2"
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], name="conv1", **pad),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["x", "c2_w", "c2_b"], ["c2"], name="conv2", **pad),
        helper.make_node("Concat", ["r1", second], ["cat1"], name="cat1", axis=1),
        helper.make_node("Conv", ["cat1", "c5_w", "c5_b"], ["c5"], name="conv5", **pad),
        helper.make_node("Concat", ["r1", "c2", "c5"], ["cat2"], name="cat2", axis=1),
        helper.make_node("BatchNormalization", ["cat2", "g", "be", "mu", "var"], ["bn"],
                         name="bn"),
        helper.make_node("Relu", ["bn"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "c3_w", "c3_b"], ["c3"], name="conv3", **pad),
        helper.make_node("GlobalAveragePool", ["c3"], ["y"], name="gap"),
        helper.make_node("Conv", ["r1", "c4_w", "c4_b"], ["y2"], name="conv4", **pad),
    ]  # fmt: skip
    if untraced:  # cat1 joins conv1's channels with the image itself
        nodes[4] = helper.make_node("Conv", ["cat1", "c5_w_x", "c5_b"], ["c5"], name="conv5",
                                    **pad)  # fmt: skip
        inits.append(_init("c5_w_x", rng.standard_normal((5, 11, 3, 3)).astype(np.float32)))
    outputs = [vin("y", ["n", 4, 1, 1]), vin("y2", ["n", 2, 6, 6])]
    return _model(nodes, [vin("x", ["n", 3, 6, 6])], outputs, inits)


def test_concat_joins_its_inputs_into_one_group_dense_block():
    proto = dense_block()
    feed = {"x": _x(3, 6, 6)}
    pruned, notes = _prune(proto, 0.5, feed)
    assert _weight_size(pruned, "c1_w") == (4, 3, 3, 3)
    assert _weight_size(pruned, "c2_w") == (3, 3, 3, 3)
    assert _weight_size(pruned, "c5_w") == (3, 7, 3, 3)  # its output and its cat1 input
    assert _weight_size(pruned, "c3_w") == (4, 10, 3, 3)  # all three, 10 of 19
    assert _weight_size(pruned, "c4_w") == (2, 4, 3, 3)  # conv1's channels read alone
    assert _weight_size(pruned, "g") == (10,)
    assert any("channels of conv1: 19 -> 10" in n for n in notes)
    test = {"x": _x(3, 6, 6, seed=9)}
    for got, want in zip(_run(pruned, test), _run(proto, test), strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_concat_keeps_a_channel_of_every_input():
    proto = dense_block(dead=False)
    pruned, _ = _prune(proto, 0.9, {"x": _x(3, 6, 6)})
    assert all(_weight_size(pruned, f"{c}_w")[0] >= 1 for c in ("c1", "c2", "c5"))
    test = {"x": _x(3, 6, 6, seed=9)}
    assert [a.shape for a in _run(pruned, test)] == [a.shape for a in _run(proto, test)]


def test_concat_with_an_input_no_layer_produces_is_left_whole():
    model = ir.from_proto(dense_block(untraced=True))
    InferShapesPass()(model)
    conv1 = next(g for g in find_groups(model) if "conv1" in [n.name for n in g.producers])
    assert conv1.blocked is not None and "Concat cat1: input x" in conv1.blocked


def _two_halves(seed: int, dead: bool):
    """conv1's weights (8 channels; 0, 1, 4, 5 zero with ``dead``) and a reader of 4."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 2, 3, 3)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32) * 0.1
    if dead:
        w1[[0, 1, 4, 5]], b1[[0, 1, 4, 5]] = 0, 0
    wa = rng.standard_normal((3, 4, 3, 3)).astype(np.float32) * 0.3
    return rng, w1, b1, wa


def split_net(how: str, dead: bool = True) -> onnx.ModelProto:
    """conv1 (8 channels) -> Split on the channel axis into 4 + 4 -> conv_a (after a Relu)
    and conv_b -> Add -> output. ``how``: sizes as an input (opset 13), as the attribute
    (opset 11), or implied equal parts. With ``dead``, channels 0, 1, 4 and 5 are zero."""
    rng, w1, b1, wa = _two_halves(6, dead)
    wb = rng.standard_normal((3, 4, 3, 3)).astype(np.float32) * 0.3
    inputs = ["c1", "sizes"] if how == "input" else ["c1"]
    attrs = {"split": [4, 4]} if how == "attribute" else {}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Split", inputs, ["s0", "s1"], name="split", axis=1, **attrs),
        helper.make_node("Relu", ["s0"], ["r0"], name="relu"),
        helper.make_node("Conv", ["r0", "wa"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["s1", "wb"], ["b"], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    inits = [_init("w1", w1), _init("b1", b1), _init("wa", wa), _init("wb", wb)]
    if how == "input":
        inits.append(_init("sizes", np.array([4, 4], np.int64)))
    opset = 11 if how == "attribute" else 13
    return _model(nodes, [vin("x", ["n", 2, 6, 6])], [vin("y", ["n", 3, 4, 4])], inits, opset)


@pytest.mark.parametrize("how", ["input", "attribute", "equal"])
def test_split_on_the_channel_axis_cuts_each_part(how):
    proto = split_net(how)
    feed = {"x": _x(2, 6, 6)}
    pruned, _ = _prune(proto, 0.5, feed)
    assert _weight_size(pruned, "w1") == (4, 2, 3, 3)
    assert _weight_size(pruned, "wa") == (3, 2, 3, 3) and _weight_size(pruned, "wb") == (3, 2, 3, 3)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    if how == "attribute":
        assert list(split.attribute[[a.name for a in split.attribute].index("split")].ints) == [
            2,
            2,
        ]
    else:  # an equal split got its sizes written out, as an input from opset 13
        sizes = next(t for t in pruned.graph.initializer if t.name == split.input[1])
        assert onnx.numpy_helper.to_array(sizes).tolist() == [2, 2]
    test = {"x": _x(2, 6, 6, seed=8)}
    np.testing.assert_allclose(_run(pruned, test)[0], _run(proto, test)[0], atol=ATOL)


def test_every_split_part_keeps_a_channel():
    pruned, _ = _prune(split_net("input", dead=False), 0.9, {"x": _x(2, 6, 6)})
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    sizes = next(t for t in pruned.graph.initializer if t.name == split.input[1])
    assert min(onnx.numpy_helper.to_array(sizes).tolist()) >= 1


def slice_net(dead: bool = True) -> onnx.ModelProto:
    """conv1 (8 channels) -> Slice [0:4] -> conv_a and Slice [4:INT_MAX] (negative axis)
    -> Slice of rows 1:5 (a spatial axis: channels untouched) -> conv_b; Add -> output.
    With ``dead``, channels 0, 1, 4 and 5 are exactly zero."""
    rng, w1, b1, wa = _two_halves(7, dead)
    wb = rng.standard_normal((3, 4, 1, 3)).astype(np.float32) * 0.3
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Slice", ["c1", "s0", "e0", "ax0"], ["p0"], name="slice0"),
        helper.make_node("Slice", ["c1", "s1", "e1", "ax1"], ["p1"], name="slice1"),
        helper.make_node("Slice", ["p1", "s2", "e2", "ax2"], ["p2"], name="rows"),
        helper.make_node("Conv", ["p0", "wa"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["p2", "wb"], ["b"], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    inits = [
        _init("w1", w1), _init("b1", b1), _init("wa", wa), _init("wb", wb),
        _init("s0", i64(0)), _init("e0", i64(4)), _init("ax0", i64(1)),
        _init("s1", i64(4)), _init("e1", i64(2**62)), _init("ax1", i64(-3)),
        _init("s2", i64(1)), _init("e2", i64(5)), _init("ax2", i64(2)),
    ]  # fmt: skip
    return _model(nodes, [vin("x", ["n", 2, 6, 6])], [vin("y", ["n", 3, 4, 4])], inits)


def test_slice_of_the_channel_axis_and_of_a_spatial_axis():
    proto = slice_net()
    pruned, _ = _prune(proto, 0.5, {"x": _x(2, 6, 6)})
    assert _weight_size(pruned, "w1") == (4, 2, 3, 3)
    assert _weight_size(pruned, "wa") == (3, 2, 3, 3) and _weight_size(pruned, "wb")[1] == 2
    bounds = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in pruned.graph.initializer}
    assert (bounds["s0"], bounds["e0"], bounds["s1"], bounds["e1"]) == ([0], [2], [2], [4])
    assert (bounds["s2"], bounds["e2"]) == ([1], [5])  # the rows slice is left as it was
    test = {"x": _x(2, 6, 6, seed=8)}
    np.testing.assert_allclose(_run(pruned, test)[0], _run(proto, test)[0], atol=ATOL)


def test_every_slice_keeps_a_channel():
    pruned, _ = _prune(slice_net(dead=False), 0.9, {"x": _x(2, 6, 6)})
    bounds = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in pruned.graph.initializer}
    assert bounds["e0"][0] - bounds["s0"][0] >= 1 and bounds["e1"][0] - bounds["s1"][0] >= 1


def test_grouped_conv_leaves_its_input_channels_whole_with_the_reason():
    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["y"], name="grouped", group=2),
    ]
    inits = [
        _init("w1", rng.standard_normal((8, 2, 3, 3)).astype(np.float32)),
        _init("w2", rng.standard_normal((4, 4, 3, 3)).astype(np.float32)),
    ]
    model = ir.from_proto(
        _model(nodes, [vin("x", ["n", 2, 6, 6])], [vin("y", ["n", 4, 4, 4])], inits)
    )
    InferShapesPass()(model)
    conv1 = next(g for g in find_groups(model) if g.name == "conv1")
    assert conv1.blocked == "grouped Conv grouped reads the channels"


def resize_net(shared: bool = False) -> onnx.ModelProto:
    """conv1 (8 channels, 4 dead) -> Resize x2 (constant scales, channel axis kept) ->
    conv2 and conv3 -> Add -> output; with ``shared`` conv2 and conv3 read one weight."""
    rng = np.random.default_rng(9)
    w1 = rng.standard_normal((8, 2, 3, 3)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32) * 0.1
    w1[:4], b1[:4] = 0, 0
    w2 = rng.standard_normal((3, 8, 3, 3)).astype(np.float32) * 0.3
    w3 = rng.standard_normal((3, 8, 3, 3)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c1", "", "scales"], ["up"], name="up", mode="nearest"),
        helper.make_node("Conv", ["up", "w2"], ["a"], name="conv2"),
        helper.make_node("Conv", ["up", "w2" if shared else "w3"], ["b"], name="conv3"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    inits = [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("w3", w3),
             _init("scales", np.array([1, 1, 2, 2], np.float32))]  # fmt: skip
    if shared:
        inits = [i for i in inits if i.name != "w3"]
    return _model(nodes, [vin("x", ["n", 2, 4, 4])], [vin("y", ["n", 3, 6, 6])], inits)


def test_resize_with_constant_scales_carries_channels_to_two_readers():
    proto = resize_net()
    pruned, _ = _prune(proto, 0.5, {"x": _x(2, 4, 4)})
    assert _weight_size(pruned, "w1")[0] == 4
    assert _weight_size(pruned, "w2")[1] == 4 and _weight_size(pruned, "w3")[1] == 4
    test = {"x": _x(2, 4, 4, seed=3)}
    np.testing.assert_allclose(_run(pruned, test)[0], _run(proto, test)[0], atol=ATOL)


def test_a_shared_reader_weight_leaves_the_group_whole_with_the_reason():
    proto = resize_net(shared=True)
    pruned, notes = _prune(proto, 0.5, {"x": _x(2, 4, 4)})
    assert _weight_size(pruned, "w1")[0] == 8
    assert any("conv1 kept" in n and "w2 is shared" in n for n in notes)
