"""onnxcomp debug: per-layer error, matched by name and through Q/DQ, culprit first."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from model_builders import _init, _model, vin
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.cli import main
from onnxcomp.cli.debug_cmd import render
from onnxcomp.debug import debug
from onnxcomp.pipeline.compress import compress


def mlp(depth: int = 4, width: int = 24, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, current = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [_init(f"w{i}", w), _init(f"b{i}", np.zeros(width, np.float32) + 0.1)]
        nodes.append(
            helper.make_node(
                "Gemm", [current, f"w{i}", f"b{i}"], [f"fc{i}"], name=f"fc{i}", transB=1
            )
        )
        current = f"fc{i}"
        if i < depth - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    return _model(nodes, [vin("x", ["N", width])], [vin(current, ["N", width])], inits)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.npz"
    x = np.random.default_rng(1).standard_normal((64, 24)).astype(np.float32)
    np.savez(path, x=x)
    return path


def _break_weight(path, name: str) -> None:
    """Scramble one quantized weight of a compressed model in its file."""
    model = onnx.load(path)
    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            q = numpy_helper.to_array(init)
            rng = np.random.default_rng(0)
            broken = rng.permutation(q.ravel()).reshape(q.shape).astype(q.dtype)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(broken, name))
    onnx.save(model, path)


def test_broken_layer_ranks_first(tmp_path, save_model, data):
    src = save_model(mlp())
    out = tmp_path / "q.onnx"
    compress(src, out, quantize="weights")
    _break_weight(out, "w1_quantized")
    result = debug(src, out, data)
    assert result.samples == 64
    assert result.layers[0].node == "fc1"
    assert result.layers[0].weights == "quantized"
    assert "--recover gptq" in result.layers[0].hint
    assert result.layers[0].sqnr_db < 10
    names = {layer.node for layer in result.layers}
    assert names == {"fc0", "fc1", "fc2", "fc3", "relu0", "relu1", "relu2"}
    # restoring fc1's weight alone wins back most of the drop ([N, 24] reads as classify)
    assert result.drop > 0 and result.layers[0].task_effect > 0.5 * result.drop
    assert all((la.task_effect or 0) < result.layers[0].task_effect for la in result.layers[1:])
    text = render(result)
    assert text.splitlines()[0].startswith("compressed model: classify: top-1 agreement")
    assert text.splitlines()[2].startswith("fc1")


def test_identical_models_have_no_error(tmp_path, save_model, data):
    src = save_model(mlp())
    result = debug(src, src, data)
    assert all(layer.rel_error == 0 and layer.sqnr_db == float("inf") for layer in result.layers)
    assert not any(layer.hint for layer in result.layers)


def test_matches_through_qdq(tmp_path, save_model, data):
    """A requantized activation is compared at its DequantizeLinear output."""
    src = save_model(mlp(depth=2))
    model = onnx.load(src)
    graph = model.graph
    coarse = [
        numpy_helper.from_array(np.array(0.5, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.uint8), "z"),
    ]
    graph.initializer.extend(coarse)
    q = helper.make_node("QuantizeLinear", ["relu0", "s", "z"], ["relu0_q"], name="q")
    dq = helper.make_node("DequantizeLinear", ["relu0_q", "s", "z"], ["relu0_dq"], name="dq")
    for node in graph.node:
        if node.name == "fc1":
            node.input[0] = "relu0_dq"
    graph.node.insert(2, q)
    graph.node.insert(3, dq)
    path = tmp_path / "qdq.onnx"
    onnx.save(model, path)
    result = debug(src, path, data)
    first = result.layers[0]
    assert (first.node, first.compared, first.quantized_output) == ("relu0", "relu0_dq", True)
    assert "--calib-method" in first.hint


def test_cli_json_and_errors(tmp_path, save_model, data, capsys):
    src = save_model(mlp())
    out = tmp_path / "q.onnx"
    compress(src, out, quantize="weights")
    assert main(["debug", str(src), str(out), "--data", str(data), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {"layers", "samples", "original", "compressed"} <= set(payload)
    assert main(["debug", str(src), str(out), "--data", str(data), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "more layers" in text
    assert main(["debug", str(src), str(tmp_path / "missing.onnx"), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxcomp: error:") and "missing.onnx" in err
    assert main(["debug", str(src), str(out)]) == 2
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, y=np.zeros((2, 24), np.float32))
    assert main(["debug", str(src), str(out), "--data", str(wrong)]) == 2
    assert "no array for model input" in capsys.readouterr().err


def test_float_types_only(tmp_path, save_model, data):
    """Shape tensors and other non-float outputs are not compared, nor reported."""
    model = mlp(depth=1)
    model.graph.node.append(helper.make_node("Shape", ["fc0"], ["shape"], name="shape"))
    model.graph.output.append(vin("shape", [2], TensorProto.INT64))
    src = save_model(model)
    result = debug(src, src, data)
    assert [layer.node for layer in result.layers] == ["fc0"]
    assert result.unmatched == []
