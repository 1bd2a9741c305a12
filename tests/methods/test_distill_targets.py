"""Distillation's choices that need no torch: the loss each output gets from its task, the
overrides, the teacher's outputs stored once (memory-mapped when big), the options, the
recipe keys and when auto's distill rung may run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from onnxcomp.auto.distill_rung import why_not
from onnxcomp.errors import OnnxcompError
from onnxcomp.methods.distill.targets import choose, make_target, parse_overrides
from onnxcomp.methods.distill.teacher import TeacherStore
from onnxcomp.options import CompressOptions
from onnxcomp.recipe import recipe_to_dict

RNG = np.random.default_rng(0)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _kinds(targets) -> list[tuple[str, str, int, tuple[int, int] | None]]:
    return [(t.name, t.kind, t.axis, t.channels) for t in targets]


def test_losses_follow_the_task():
    scores = RNG.standard_normal((16, 10)).astype(np.float32)
    steps = _softmax(RNG.standard_normal((16, 40, 37)), 2)  # a recognizer's [N, T, C]
    value = RNG.standard_normal(16).astype(np.float32)  # one number a sample
    arrays = {"scores": scores, "steps": steps, "value": value}
    assert _kinds(choose(arrays, None, {}, {})) == [
        ("scores", "kl", -1, None), ("steps", "kl", -1, None), ("value", "mse", 0, None),
    ]  # fmt: skip
    head = RNG.random((2, 4 + 3, 400)).astype(np.float32)  # YOLOv8: [N, 4 + C, anchors]
    assert _kinds(choose({"head": head}, "detect", {}, {})) == [
        ("head", "mse", 1, (0, 4)), ("head", "bkl", 1, (4, 7)),
    ]  # fmt: skip
    emb = RNG.standard_normal((16, 32)).astype(np.float32)
    assert _kinds(choose({"emb": emb}, "embed", {}, {})) == [("emb", "cosine", -1, None)]
    seg = RNG.standard_normal((2, 5, 8, 8)).astype(np.float32)  # per-pixel classes
    assert _kinds(choose({"seg": seg}, "segment", {}, {})) == [("seg", "kl", 1, None)]
    assert _kinds(choose({"scores": scores}, "regress", {}, {})) == [("scores", "mse", 1, None)]


def test_token_states_find_the_mask_the_embed_judge_reads():
    """[N, T, D] states of an embedding get [N, T] real-token weights from the feed: a 0/1
    mask as it is, an additive one (0 real, -30 padding, [N, 1, 1, T]) as 1/0; without
    a mask the flattened cosine stays."""
    states = RNG.standard_normal((3, 4, 8)).astype(np.float32)
    additive = np.zeros((3, 1, 1, 4), np.float32)
    additive[0, ..., 2:] = -30.0
    (t,) = choose({"hidden": states}, "embed", {}, {}, feed={"attention_mask": additive})
    assert t.weights is not None
    assert t.weights.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    binary = np.array([[1, 1, 1, 0]] * 3, np.int64)
    (t,) = choose({"hidden": states}, "embed", {}, {}, feed={"mask": binary}, mask="mask")
    assert t.weights is not None and t.weights.tolist() == binary.tolist()
    (t,) = choose({"hidden": states}, "embed", {}, {}, feed={"ids": binary})
    assert t.weights is None


def test_overrides_and_their_errors():
    scores = RNG.standard_normal((8, 4)).astype(np.float32)
    got = choose({"y": scores}, None, {}, parse_overrides(("y=cosine",)))
    assert _kinds(got) == [("y", "cosine", -1, None)]
    with pytest.raises(OnnxcompError, match="names no float output"):
        choose({"y": scores}, None, {}, {"z": "kl"})
    for bad in ("y", "y=l1", "=kl"):
        with pytest.raises(OnnxcompError, match="OUTPUT=kl"):
            parse_overrides((bad,))


def test_probabilities_become_log_probabilities_in_place_only_when_asked():
    p = _softmax(RNG.standard_normal((6, 5)), 1)
    kept = p.copy()
    copy = make_target("p", "kl", p, "logits")
    assert np.array_equal(p, kept) and copy.probabilities and copy.logits_of == "logits"
    np.testing.assert_allclose(copy.teacher, np.log(kept), rtol=1e-6)
    mine = make_target("p", "kl", p, in_place=True)
    assert mine.teacher is p and np.array_equal(p, np.log(kept))
    mse = make_target("y", "mse", np.array([[1.0, 10.0], [3.0, 30.0]], np.float32))
    np.testing.assert_allclose(mse.spread.ravel(), [1.0, 10.0])


class _Session:
    """Stands in for onnxruntime: outputs [N, 3, 5] float64 and int labels."""

    def run(self, names, feed):
        x = feed["x"]
        return [np.repeat(x[:, None, :], 3, axis=1).astype(np.float64), x[:, 0].astype(np.int64)]


def test_teacher_outputs_are_stored_once_and_mapped_past_the_limit():
    x = RNG.standard_normal((10, 5)).astype(np.float32)
    store = TeacherStore(limit=0)  # everything mapped
    try:
        big, labels = store.run(_Session(), {"x": x}, 4, None)
        assert isinstance(big, np.memmap) and big.dtype == np.float32 and big.shape == (10, 3, 5)
        assert np.array_equal(big[:, 1], x) and np.array_equal(labels, x[:, 0].astype(np.int64))
        folder = store.folder
        assert folder is not None and store.mapped == big.nbytes + labels.nbytes
    finally:
        store.close()
    assert not folder.exists()
    small = TeacherStore()
    assert not isinstance(small.run(_Session(), {"x": x}, 4, None)[0], np.memmap)
    assert small.folder is None


def test_options(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec  # the values are checked whether torch is here or not

    def find_spec(name: str, *a):
        return object() if name == "torch" else real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    base = {"quantize": "weights", "calib": "c.npz"}
    with pytest.raises(OnnxcompError, match="need --recover distill"):
        CompressOptions(**base, recover="bias", distill_loss=("y=kl",)).validate()
    for key, value, match in (
        ("seed", -1, "--seed"), ("time_limit", 0, "--time-limit"),
        ("distill_loss", ("y=l1",), "OUTPUT=kl"),
    ):  # fmt: skip
        with pytest.raises(OnnxcompError, match=match):
            CompressOptions(**base, recover="distill", **{key: value}).validate()


def test_recipe_records_the_training():
    options = CompressOptions(quantize="weights", calib="c.npz", recover="distill")
    glob = recipe_to_dict(options)["compress"]
    assert glob["recover"] == "distill"
    assert (glob["distill_steps"], glob["lr"], glob["seed"]) == (200, 1e-3, 0)
    assert "seed" not in recipe_to_dict(CompressOptions(quantize="weights"))["compress"]


def test_auto_rung_needs_held_back_data_apart_from_the_training_data():
    opts = SimpleNamespace(recover="distill", calib="c.npz", data=None, verify=None)
    assert "--data or --verify" in (why_not(opts) or "")
    assert why_not(SimpleNamespace(**{**vars(opts), "data": "d.npz"})) is None
    assert why_not(SimpleNamespace(**{**vars(opts), "recover": None})) == "off"


def test_the_pipeline_side_of_distill_imports_no_torch():
    """What the default suite and a run without --recover distill load never needs torch."""
    import subprocess
    import sys

    code = (
        "import sys; import onnxcomp.methods.distill, onnxcomp.methods.distill.repack, "
        "onnxcomp.methods.distill.targets, onnxcomp.methods.distill.teacher, "
        "onnxcomp.auto.distill_rung, onnxcomp.pipeline.build; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class _TimeMajor:
    """A CTC recognizer's [T, N, C] output (ddddocr), samples on axis 1."""

    def run(self, names, feed):
        return [np.zeros((19, len(feed["x"]), 7), np.float32)]


def test_an_output_without_a_sample_axis_is_refused_by_name():
    """Samples neither first nor swapped to first (batch_axes did not find the output
    time-major): one line naming the output, not a broadcast error."""
    x = RNG.standard_normal((10, 5)).astype(np.float32)
    store = TeacherStore()
    with pytest.raises(OnnxcompError, match=r"output 'logits' has no sample axis first or"):
        store.run(_TimeMajor(), {"x": x}, 4, ["logits"])
    got = store.run(_TimeMajor(), {"x": x}, 4, ["logits"], {0})
    assert got[0].shape == (10, 19, 7)
    store.close()
