"""Mixed inputs for distillation (methods/distill/mixup.py), without torch: the blends are
convex combinations of two samples of the minibatch, the sample's own share >= 1/2; the
targets hold the teacher's outputs on exactly those blends, stored as the training
targets store theirs; models fed token ids do not mix."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxcomp.methods.distill.mixup import Mixer, mixable
from onnxcomp.methods.distill.targets import make_target
from onnxcomp.runtime.session import make_session


def _softmax_model() -> onnx.ModelProto:
    """y = softmax(x @ W) on [N, 4] inputs, 3 classes; z = x @ W time-major as [1, N, 3]."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
        helper.make_node("Unsqueeze", ["logits", "zero"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, "N", 3])],
        [helper.make_tensor("W", TensorProto.FLOAT, [4, 3], w.ravel()),
         helper.make_tensor("zero", TensorProto.INT64, [1], [0])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_blends_and_teacher_outputs_match():
    model = _softmax_model()
    session = make_session(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    y = session.run(["y"], {"x": x})[0]
    targets = [make_target("y", "kl", y.copy())]
    mixer = Mixer(session, ["y"], set(), {"x": x}, targets, None)
    idx = np.array([1, 3, 4, 7, 9])
    feeds, fresh = mixer(idx, np.random.default_rng(1))
    blended = feeds["x"]
    assert blended.shape == (5, 4) and blended.dtype == np.float32
    for i, row in enumerate(blended):  # row = lam * own + (1 - lam) * one of the minibatch
        fits = []
        for j in idx:
            diff = x[idx[i]] - x[j]
            if j == idx[i] or not diff.any():
                fits.append(np.allclose(row, x[idx[i]], atol=1e-6))
                continue
            lam = float((row - x[j]) @ diff / (diff @ diff))
            fits.append(
                0.5 - 1e-6 <= lam <= 1 + 1e-6 and np.allclose(lam * diff + x[j], row, atol=1e-5)
            )
        assert any(fits)
    expected = np.log(np.clip(session.run(["y"], {"x": blended})[0], 1e-12, None))
    assert fresh[0].probabilities and targets[0].probabilities
    np.testing.assert_allclose(fresh[0].teacher, expected, rtol=1e-6, atol=1e-6)
    assert fresh[0].teacher.shape == (5, 3)


def test_time_major_outputs_are_stored_samples_first():
    model = _softmax_model()
    session = make_session(model)
    x = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    z = np.swapaxes(session.run(["z"], {"x": x})[0], 0, 1)  # [N, 1, 3]
    targets = [make_target("z", "mse", z)]
    mixer = Mixer(session, ["z"], {0}, {"x": x}, targets, None)
    feeds, fresh = mixer(np.arange(6), np.random.default_rng(3))
    expected = np.swapaxes(session.run(["z"], feeds)[0], 0, 1)
    assert fresh[0].teacher.shape == (6, 1, 3)
    np.testing.assert_allclose(fresh[0].teacher, expected, rtol=1e-6, atol=1e-6)


def test_same_seed_same_blends():
    session = make_session(_softmax_model())
    x = np.random.default_rng(4).normal(size=(8, 4)).astype(np.float32)
    targets = [make_target("y", "kl", session.run(["y"], {"x": x})[0])]
    mixer = Mixer(session, ["y"], set(), {"x": x}, targets, None)
    a = mixer(np.arange(8), np.random.default_rng(5))[0]["x"]
    b = mixer(np.arange(8), np.random.default_rng(5))[0]["x"]
    assert np.array_equal(a, b)


def test_token_ids_do_not_mix():
    y = np.zeros((4, 3), np.float32)
    ids = {"ids": np.zeros((4, 8), np.int64)}
    assert not mixable(ids, [make_target("y", "mse", y)])
    assert mixable({"x": np.zeros((4, 8), np.float32)}, [make_target("y", "mse", y)])
    masked = make_target("y", "cosine", y)
    masked.weights = np.ones((4, 3), np.float32)
    assert not mixable({"x": np.zeros((4, 8), np.float32)}, [masked])
