"""--recover distill end to end (opt-in: ``pytest -m distill``, needs .[distill]).

A harsh compression of a real small model (the digits MLP) and of a small CNN, then
distillation: the held-back drop improves, the file is valid and decodes to exactly the
values the student simulated; an op the table lacks is refused by name, nothing written."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from model_builders import _init, _model, vin

from onnxcomp.errors import OnnxcompError
from onnxcomp.methods.distill.forms import find_forms, simulated_codes
from onnxcomp.options import CompressOptions
from onnxcomp.pipeline.compress import compress, compress_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.distill


def _accuracy(path, test) -> float:
    import onnxruntime as ort

    data = np.load(test)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(
        (session.run(None, {"pixels": data["pixels"]})[0].argmax(1) == data["label"]).mean()
    )


def _note(result) -> str:
    return next(n for n in result.notes if n.startswith("distill"))


def _student_matches_file(path, feed) -> None:
    """The written file decodes to the values the student simulates: a student built from
    the file runs like onnxruntime, and int8 codes re-simulate to themselves."""
    import onnxruntime as ort

    from onnxcomp.methods.distill.student import Student

    model = ir.load(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    forms = find_forms(model)
    for form in forms.int8:
        q = model.graph.initializers[form.codes].const_value.numpy()
        s = model.graph.initializers[form.scale].const_value.numpy().reshape(form.scale_shape)
        assert np.array_equal(simulated_codes(q.astype(np.float32) * s, s, form.qmax), q)
    student = Student(model, forms, keep_zeros=True)
    name = model.graph.outputs[0].name
    with torch.no_grad():
        mine = student({k: torch.from_numpy(v) for k, v in feed.items()})[name].numpy()
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prune_sparsity": 0.75, "quantize": "codebook", "bits": 2},
        {"prune_sparsity": 0.8, "quantize": "weights"},
    ],
    ids=["codebook2-sparse75", "prune80-int8"],
)
def test_digits_distill_recovers(digits, tmp_path, kwargs):
    model, test, calib = digits
    data = {"calib": str(calib)} if kwargs["quantize"] == "codebook" else {}
    plain = compress(model, tmp_path / "plain.onnx", **data, **kwargs)
    result = compress(model, tmp_path / "d.onnx", calib=str(calib), recover="distill", **kwargs)
    assert "kept" in _note(result) and "not kept" not in _note(result)
    before, after = _accuracy(tmp_path / "plain.onnx", test), _accuracy(tmp_path / "d.onnx", test)
    assert after > before and after >= _accuracy(model, test) - 0.03, (before, after)
    assert plain.output_bytes == pytest.approx(result.output_bytes, rel=0.01)
    _student_matches_file(tmp_path / "d.onnx", {"pixels": np.load(test)["pixels"][:50]})


def _cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    wg = (rng.standard_normal((10, 16)) * 0.3).astype(np.float32)
    nodes = [
        onnx.helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["c1"], ["r1"]),
        onnx.helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        onnx.helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["c2"], ["r2"]),
        onnx.helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        onnx.helper.make_node("Flatten", ["g"], ["f"]),
        onnx.helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], transB=1),
    ]
    inits = [
        _init("w1", w1), _init("b1", rng.standard_normal(8).astype(np.float32) * 0.1),
        _init("w2", w2), _init("b2", rng.standard_normal(16).astype(np.float32) * 0.1),
        _init("wg", wg), _init("bg", np.zeros(10, np.float32)),
    ]  # fmt: skip
    return _model(nodes, [vin("x", ["N", 3, 8, 8])], [vin("logits", ["N", 10])], inits)


def test_cnn_distill_is_valid_and_deterministic(tmp_path):
    onnx.save(_cnn(), tmp_path / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((64, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    kw = {"prune_sparsity": 0.8, "quantize": "weights", "calib": str(tmp_path / "calib.npz")}
    first = compress(tmp_path / "cnn.onnx", tmp_path / "a.onnx", recover="distill", **kw)
    compress(tmp_path / "cnn.onnx", tmp_path / "b.onnx", recover="distill", **kw)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert "drop" in _note(first)
    if "not kept" not in _note(first):
        _student_matches_file(tmp_path / "a.onnx", {"x": x[:8]})


def test_float_inputs_train_on_blends_unless_told(tmp_path):
    """The CNN's image input mixes (said in the note, same bytes twice: the test above);
    ``distill_mix=False`` trains on the samples as they are and gives other values."""
    onnx.save(_cnn(), tmp_path / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((64, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    kw = {"prune_sparsity": 0.8, "quantize": "weights", "calib": str(tmp_path / "calib.npz")}
    kw |= {"distill_steps": 50, "recover": "distill"}
    mixed = compress(tmp_path / "cnn.onnx", tmp_path / "a.onnx", **kw)
    plain = compress(tmp_path / "cnn.onnx", tmp_path / "b.onnx", distill_mix=False, **kw)
    assert "blended in pairs" in _note(mixed)
    assert "blended" not in _note(plain)
    assert _note(mixed) != _note(plain)


def _hardmax_net() -> onnx.ModelProto:
    """Hardmax: an op the table lacks (a one-hot of the argmax has no gradient)."""
    w = np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32)
    nodes = [
        onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
        onnx.helper.make_node("Hardmax", ["h"], ["y"]),
    ]
    return _model(nodes, [vin("x", ["N", 16])], [vin("y", ["N", 10])], [_init("w", w)])


def test_unsupported_op_is_named(tmp_path):
    onnx.save(_hardmax_net(), tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=np.zeros((8, 16), np.float32))
    with pytest.raises(OnnxcompError, match="Hardmax"):
        compress(
            tmp_path / "m.onnx", tmp_path / "out.onnx", quantize="weights",
            calib=str(tmp_path / "c.npz"), recover="distill",
        )  # fmt: skip
    assert not (tmp_path / "out.onnx").exists()


def test_options_and_auto():
    with pytest.raises(OnnxcompError, match="--lr"):
        CompressOptions(quantize="weights", calib="x.npz", recover="distill", lr=0).validate()
    model = ir.from_proto(_cnn())
    with pytest.raises(OnnxcompError, match="calibration data"):
        compress_model(model, CompressOptions(quantize="weights", recover="distill"))


def test_op_table_runs_like_onnxruntime():
    import onnxruntime as ort

    from onnxcomp.methods.distill.optable import run_graph, unsupported

    proto = _cnn()
    model = ir.from_proto(proto)
    assert unsupported(model.graph) == []
    assert unsupported(ir.from_proto(_hardmax_net()).graph) == ["Hardmax"]
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    env = {k: torch.from_numpy(v.const_value.numpy()) for k, v in model.graph.initializers.items()}
    mine = run_graph(model.graph, {**env, "x": torch.from_numpy(x)})["logits"].numpy()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(mine, session.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_targets_read_probabilities_as_log_probabilities():
    from onnxcomp.methods.distill.targets import is_probabilities, make_target

    p = np.array([[0.2, 0.8], [0.5, 0.5]], np.float32)
    assert is_probabilities(p) and not is_probabilities(p * 2)
    kl = make_target("p", "kl", p, "logits")
    np.testing.assert_allclose(kl.teacher, np.log(p))
    mse = make_target("y", "mse", np.array([[1.0, 10.0], [3.0, 30.0]], np.float32), None)
    assert mse.spread is not None and mse.spread.shape == (1, 2)
    np.testing.assert_allclose(mse.spread.ravel(), [1.0, 10.0])
