"""`inspect` reports what a model holds, before and after compression."""

from __future__ import annotations

import json

import onnx
from model_builders import conv_net, embedding_model

from onnxcomp import compress
from onnxcomp.cli import main
from onnxcomp.inspect_model import inspect


def test_inspect_counts_weights_in_constant_nodes(tmp_path):
    """Exporters keep weights in Constant nodes, often inside If branches."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 4), np.float32))

    def branch(tag: str) -> onnx.GraphProto:
        const = helper.make_node("Constant", [], [f"{tag}_w"], value=w)
        mm = helper.make_node("MatMul", ["x", f"{tag}_w"], [f"{tag}_y"])
        out = helper.make_tensor_value_info(f"{tag}_y", TensorProto.FLOAT, [1, 4])
        return helper.make_graph([const, mm], tag, [], [out])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("a"), else_branch=branch("b"))
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    r = inspect(path)
    assert r.parameters == 2 * 32
    assert r.parameter_bytes == {"float": 2 * 32 * 4}


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
    # All decoded at load (Cast * scale): Conv has no weight-only int8 kernel and the Gemm
    # weight is too small for MatMulNBits to pay (decode_at_load.NBITS_MIN_ELEMENTS)
    assert "DequantizeLinear" not in r["op_types"]
    assert r["op_types"]["Cast"] == 3
    assert r["zero_fraction"] == 0.5  # tensors under 16 elements (biases, scales) not counted
    assert "int8" in r["parameter_bytes"]
    assert main(["inspect", str(out)]) == 0
    assert "quantized tensors: 3" in capsys.readouterr().out


def test_storage_forms_walk_a_deep_activation_chain_without_recursion(tmp_path):
    """A MatMul whose second input is an activation 3,000 nodes deep (a CTC recognizer
    after int8 has thousands): the walk back stops at the graph input, iteratively."""
    from onnx import TensorProto, helper

    from onnxcomp.graph.storage_forms import storage_forms
    from onnxcomp.io.model_io import load

    nodes, x = [], "x"
    for i in range(3000):
        nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
        x = f"r{i}"
    nodes.append(helper.make_node("MatMul", ["x", x], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "deep.onnx")
    assert storage_forms(load(tmp_path / "deep.onnx")) == []
