"""`check` on models whose differences are known exactly."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from model_builders import vin
from onnx import helper, numpy_helper

from onnxcomp.check import check
from onnxcomp.cli import main


def _linear(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"])],
        "g",
        [vin("x", ["N", 4])],
        [vin("scores", ["N", 4])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def pair(save_model, tmp_path):
    """Original = identity; 'compressed' swaps classes 0 and 1."""
    swap = np.eye(4)[:, [1, 0, 2, 3]]
    a = save_model(_linear(np.eye(4)), "a.onnx")
    b = save_model(_linear(swap), "b.onnx")
    x = np.eye(4, dtype=np.float32)[np.arange(8) % 4] * 2 + 0.1
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.arange(8) % 4)
    return a, b, data, x, swap


def test_known_agreement_accuracy_and_cosine(pair):
    a, b, data, x, swap = pair
    r = check(a, b, data=str(data), labels="y", runs=3)
    out = r.outputs[0]
    assert out.top1_agreement == pytest.approx(0.5)
    assert r.accuracy_original == pytest.approx(1.0)
    assert r.accuracy_compressed == pytest.approx(0.5)
    assert r.accuracy_drop == pytest.approx(0.5)
    ref, new = x, x @ swap
    cos = (ref * new).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(new, axis=1))
    assert out.cosine == pytest.approx(cos.mean(), rel=1e-6)
    assert out.max_abs_error == pytest.approx(np.abs(ref - new).max(), rel=1e-6)
    assert r.samples == 8 and not r.synthetic
    assert r.latency_original.runs == 3 and r.latency_compressed.runs == 3


def test_identical_models_are_exact(pair):
    a, _, data, _, _ = pair
    r = check(a, a, data=str(data), runs=2)
    assert r.outputs[0].exact and r.outputs[0].top1_agreement == 1.0
    assert r.outputs[0].cosine == pytest.approx(1.0)
    assert r.size_ratio == 1.0 and r.drop == 0.0


@pytest.mark.parametrize(("max_drop", "code"), [(0.4, 1), (0.5, 0)])
def test_max_drop_gates_the_exit_code(pair, capsys, max_drop, code):
    a, b, data, _, _ = pair
    rc = main(
        [
            "check",
            str(a),
            str(b),
            "--data",
            str(data),
            "--labels",
            "y",
            "--max-drop",
            str(max_drop),
            "--runs",
            "2",
            "--json",
        ]
    )
    assert rc == code
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy_drop"] == pytest.approx(0.5)
    assert report["passed"] is (code == 0)


def test_without_labels_gates_on_agreement(pair, capsys):
    a, b, data, _, _ = pair
    assert (
        main(["check", str(a), str(b), "--data", str(data), "--max-drop", "0.49", "--runs", "1"])
        == 1
    )
    text = capsys.readouterr().out
    assert "FAIL" in text and "top-1 agreement 50.00%" in text


def test_synthetic_inputs_are_reported(pair, capsys):
    a, b, _, _, _ = pair
    assert main(["check", str(a), str(b), "--runs", "1"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out


def test_json_is_one_object_on_stdout(pair, capsys):
    a, b, data, _, _ = pair
    main(["check", str(a), str(b), "--data", str(data), "--runs", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"size_ratio", "outputs", "latency_original", "latency_ratio"}
