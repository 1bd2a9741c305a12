"""Tiny models for the per-method tests: a two-layer MLP with initializer weights."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.io.data import DataSource, input_specs, open_data


def mlp(
    features: int = 64, hidden: int = 64, out: int = 8, seed: int = 0, opset: int = 17
) -> ir.Model:
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((features, hidden)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((hidden, out)) / 8).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 10 if opset >= 21 else 8
    return ir.from_proto(proto)


def data_for(model: ir.Model, n: int = 32, seed: int = 1) -> DataSource:
    rng = np.random.default_rng(seed)
    feeds = [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(n // 4)]
    return open_data(feeds, input_specs(model))
