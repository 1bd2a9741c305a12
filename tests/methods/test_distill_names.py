"""The op table's names need no torch: a graph is refused by op name before torch loads."""

from __future__ import annotations

import subprocess
import sys

import onnx_ir as ir
from model_builders import conv_net
from onnx import helper

from onnxcomp.methods.distill.optable import unsupported


def test_unsupported_names_ops_and_domains_of_subgraphs_too():
    branch = helper.make_graph(
        [helper.make_node("Hardmax", ["x"], ["b"])], "b", [],
        [helper.make_empty_tensor_value_info("b")],
    )  # fmt: skip
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("ZipMap", ["r"], ["z"], domain="ai.onnx.ml", classlabels_int64s=[0]),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
    ]
    graph = helper.make_graph(nodes, "g", [], [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert unsupported(ir.from_proto(model).graph) == ["Hardmax", "ai.onnx.ml.ZipMap"]
    assert unsupported(ir.from_proto(conv_net()).graph) == []


def test_the_names_import_no_torch():
    code = (
        "import sys; import onnxcomp.methods.distill.optable, onnxcomp.methods.distill.passes;"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
