"""Recovery end to end through compress(): valid models, and closer to the teacher."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_builders import _init, _model, conv_net, vin
from onnx import helper

from onnxcomp.errors import OnnxcompError
from onnxcomp.io.data import input_specs, open_data
from onnxcomp.io.model_io import load
from onnxcomp.pipeline.compress import CompressOptions, compress
from onnxcomp.runtime import capture

LAYER_OUTPUTS = ["c1", "c2", "a1", "y"]  # mm1's shift goes into add1's bias


def small_net(seed: int = 0) -> onnx.ModelProto:
    """Grouped strided Conv -> Conv -> Flatten -> MatMul + Add -> Relu -> MatMul (no bias)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w1", "b1"],
            ["c1"],
            name="conv1",
            group=2,
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", auto_pad="SAME_UPPER"),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["m1"], name="mm1"),
        helper.make_node("Add", ["m1", "b3"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r3"]),
        helper.make_node("MatMul", ["r3", "w4"], ["y"], name="mm2"),
    ]
    inits = [
        _init("w1", rng.standard_normal((8, 2, 3, 3)).astype(np.float32) * 0.4),
        _init("b1", rng.standard_normal(8).astype(np.float32) * 0.1),
        _init("w2", rng.standard_normal((6, 8, 3, 3)).astype(np.float32) * 0.2),
        _init("w3", rng.standard_normal((6 * 16, 32)).astype(np.float32) * 0.15),
        _init("b3", rng.standard_normal(32).astype(np.float32) * 0.1),
        _init("w4", rng.standard_normal((32, 10)).astype(np.float32) * 0.3),
    ]
    return _model(nodes, [vin("x", ["N", 4, 8, 8])], [vin("y", ["N", 10])], inits)


def feeds(n_batches: int = 4, seed: int = 1, shape=(32, 4, 8, 8)) -> list[dict]:
    """Batches from one distribution (a fixed pattern plus noise); ``seed`` picks samples."""
    base = np.random.default_rng(0).standard_normal(shape[1:]).astype(np.float32)
    rng = np.random.default_rng(seed)
    return [{"x": (base + rng.standard_normal(shape)).astype(np.float32)} for _ in range(n_batches)]


def outputs(path, data: list[dict]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in data])


def error(teacher, student, data) -> float:
    ref = outputs(teacher, data)
    return float(np.linalg.norm(outputs(student, data) - ref) / np.linalg.norm(ref))


def _valid(path) -> None:
    onnx.checker.check_model(str(path), full_check=True)
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_gptq_model_is_valid_and_closer(tmp_path, save_model):
    src = save_model(small_net())
    calib, held_out = feeds(), feeds(seed=9)
    plain = compress(src, tmp_path / "plain.onnx", quantize="weights", per_tensor=True)
    result = compress(
        src,
        tmp_path / "gptq.onnx",
        quantize="weights",
        per_tensor=True,
        recover="gptq",
        calib=calib,
    )
    _valid(tmp_path / "gptq.onnx")
    assert {r.name for r in result.quantized} == {r.name for r in plain.quantized}
    assert {r.weight for r in result.recovered} == {"w1", "w2", "w3", "w4"}
    for rec in result.recovered:
        assert rec.error <= rec.baseline
    assert error(src, tmp_path / "gptq.onnx", calib) < error(src, tmp_path / "plain.onnx", calib)
    assert error(src, tmp_path / "gptq.onnx", held_out) < error(
        src, tmp_path / "plain.onnx", held_out
    )


def test_gptq_handles_other_layers_plainly(tmp_path, save_model):
    """ConvTranspose is not rebuilt: it is still quantized, by plain rounding."""
    src = save_model(conv_net())
    result = compress(
        src,
        tmp_path / "out.onnx",
        quantize="weights",
        recover="gptq",
        calib=feeds(shape=(4, 3, 8, 8)),
    )
    _valid(tmp_path / "out.onnx")
    assert {r.name for r in result.quantized} == {"w1", "wt", "wg"}
    assert {r.weight for r in result.recovered} == {"w1", "wg"}


def test_sparsegpt_exact_sparsity_and_closer(tmp_path, save_model):
    src = save_model(small_net())
    calib = feeds()
    compress(src, tmp_path / "mag.onnx", prune_sparsity=0.5)
    result = compress(
        src, tmp_path / "sgpt.onnx", prune_sparsity=0.5, recover="sparsegpt", calib=calib
    )
    _valid(tmp_path / "sgpt.onnx")
    for rec in result.pruned:
        assert rec.zeros_after == round(0.5 * rec.size)
    assert error(src, tmp_path / "sgpt.onnx", calib) < error(src, tmp_path / "mag.onnx", calib)


def test_prune_then_gptq_keeps_zeros(tmp_path, save_model):
    src = save_model(small_net())
    compress(
        src,
        tmp_path / "out.onnx",
        prune_sparsity=0.6,
        quantize="weights",
        recover="gptq",
        calib=feeds(),
    )
    model = load(tmp_path / "out.onnx")
    for name in ("w1", "w2", "w3", "w4"):
        q = model.graph.initializers[f"{name}_quantized"].const_value.numpy()
        assert np.count_nonzero(q == 0) >= round(0.6 * q.size)


def _channel_means(path_or_model, names, data):
    model = load(path_or_model)
    source = open_data(data, input_specs(model))
    sums = {}
    for _, values in capture.stream(model, names, source):
        for n in names:
            v = values[n]
            axis = 1 if n.startswith("c") else v.ndim - 1
            others = tuple(i for i in range(v.ndim) if i != axis)
            sums[n] = sums.get(n, 0) + v.astype(np.float64).mean(axis=others) / len(data)
    return sums


@pytest.mark.parametrize(
    "options",
    [
        {"quantize": "weights", "per_tensor": True},
        {"prune_sparsity": 0.6},
    ],
)
def test_bias_correction_zeroes_mean_shift(tmp_path, save_model, options):
    src = save_model(small_net())
    calib = feeds()
    compress(src, tmp_path / "plain.onnx", **options)
    result = compress(src, tmp_path / "bias.onnx", recover="bias", calib=calib, **options)
    _valid(tmp_path / "bias.onnx")
    assert {r.layer for r in result.recovered} == {"conv1", "conv2", "mm1", "mm2"}
    teacher = _channel_means(src, LAYER_OUTPUTS, calib)
    plain = _channel_means(tmp_path / "plain.onnx", LAYER_OUTPUTS, calib)
    fixed = _channel_means(tmp_path / "bias.onnx", LAYER_OUTPUTS, calib)
    for name in LAYER_OUTPUTS:
        before = np.abs(plain[name] - teacher[name]).max()
        after = np.abs(fixed[name] - teacher[name]).max()
        assert after <= 1e-5 * max(1.0, np.abs(teacher[name]).max()), name
        assert after < before or before == 0, name
    # mm1's shift went into add1's bias; mm2 got a new Add that took over the output name
    model = load(tmp_path / "bias.onnx")
    assert [o.name for o in model.graph.outputs] == ["y"]
    assert model.graph.outputs[0].producer().op_type == "Add"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantize": "weights", "recover": "gptq"}, "needs calibration data"),
        ({"prune_sparsity": 0.5, "recover": "gptq", "calib": [{}]}, "add --quantize"),
        ({"quantize": "weights", "recover": "sparsegpt", "calib": [{}]}, "--prune-sparsity"),
        ({"quantize": "weights", "recover": "magic", "calib": [{}]}, "--recover must be"),
        (
            {"prune_sparsity": 0.5, "global_prune": True, "recover": "sparsegpt", "calib": [{}]},
            "drop --global",
        ),
    ],
)
def test_recover_options_are_validated(kwargs, message):
    with pytest.raises(OnnxcompError, match=message):
        CompressOptions(**kwargs).validate()


@pytest.mark.parametrize("per_channel", [True, False])
def test_low_bit_gptq_uses_low_bit_scales(save_model, per_channel):
    """bits=4 (int8 storage): codes in [-7, 7], scale max|w| / 7, as plain 4-bit rounding."""
    from onnxcomp.methods.recover import GPTQPass

    model = load(save_model(small_net()))
    originals = {n: model.graph.initializers[n].const_value.numpy() for n in ("w3", "w4")}
    GPTQPass(open_data(feeds(), input_specs(model)), bits=4, per_channel=per_channel)(model)
    for name, w in originals.items():
        q = model.graph.initializers[f"{name}_quantized"].const_value.numpy()
        s = model.graph.initializers[f"{name}_scale"].const_value.numpy()
        assert np.abs(q).max() <= 7
        expected = np.abs(w).max(axis=0) / 7 if per_channel else np.abs(w).max() / 7
        np.testing.assert_allclose(s, expected, rtol=1e-6)


def test_bias_correction_that_moves_outputs_away_is_not_kept(tmp_path, save_model, monkeypatch):
    """A correction that hurts (here: every shift made 50x too big) is measured against
    the teacher on the calibration data and dropped, with a note saying so."""
    from onnxcomp.methods.recover import passes
    from onnxcomp.methods.recover.bias_fold import correct_biases

    def overdone(teacher, student, calib, threads=0):
        from onnxcomp.methods.recover import bias_fold

        real = bias_fold.mean_shift
        monkeypatch.setattr(bias_fold, "mean_shift", lambda s, t: 50 * real(s, t))
        return correct_biases(teacher, student, calib, threads)

    monkeypatch.setattr(passes, "correct_biases", overdone)
    src = save_model(small_net())
    calib = feeds()
    options = {"prune_sparsity": 0.6}
    compress(src, tmp_path / "plain.onnx", **options)
    result = compress(src, tmp_path / "bias.onnx", recover="bias", calib=calib, **options)
    assert not result.recovered
    assert any("bias correction not kept" in n for n in result.notes)
    plain = onnx.load(str(tmp_path / "plain.onnx"))
    fixed = onnx.load(str(tmp_path / "bias.onnx"))
    assert [t.name for t in plain.graph.initializer] == [t.name for t in fixed.graph.initializer]
    assert all(
        np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
        for a, b in zip(plain.graph.initializer, fixed.graph.initializer, strict=True)
    )
