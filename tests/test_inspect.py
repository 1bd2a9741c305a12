"""`inspect` reports what a model holds, before and after compression."""

from __future__ import annotations

import json

from builders import conv_net, embedding_model

from onnxcomp import compress
from onnxcomp.cli import main
from onnxcomp.inspect_model import inspect


def test_inspect_plain_model(save_model):
    r = inspect(save_model(embedding_model()))
    assert r.opsets[""] == 12
    assert [(i.name, i.dtype, i.shape) for i in r.inputs] == [("ids", "int64", ["N", "T"])]
    assert r.op_types == {"Add": 1, "Gather": 1, "MatMul": 1, "Relu": 1}
    assert r.parameters == 50 * 16 + 16 * 4 + 4
    assert r.parameter_bytes == {"float": 4 * r.parameters}
    assert r.quantized_tensors == []


def test_inspect_sees_sparsity_and_quantization(save_model, tmp_path, capsys):
    src = save_model(conv_net())
    out = tmp_path / "q.onnx"
    compress(src, out, prune_sparsity=0.5, quantize="weights")
    assert main(["inspect", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert sorted(r["quantized_tensors"]) == ["w1_quantized", "wg_quantized", "wt_quantized"]
    assert r["op_types"]["DequantizeLinear"] == 3
    assert r["zero_fraction"] == 0.5  # tensors under 16 elements (biases, scales) not counted
    assert "int8" in r["parameter_bytes"]
    assert main(["inspect", str(out)]) == 0
    assert "quantized tensors: 3" in capsys.readouterr().out
