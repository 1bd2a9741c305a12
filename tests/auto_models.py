"""A model with one robust and one fragile layer, and data to judge it on."""

from __future__ import annotations

import numpy as np
import onnx
from builders import vin
from onnx import helper, numpy_helper


def robust_fragile_model() -> onnx.ModelProto:
    """'robust': identity plus dust (90% pruning keeps it); 'fragile': dense, even weights."""
    rng = np.random.default_rng(0)
    robust = (np.eye(64) + rng.standard_normal((64, 64)) * 0.02).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], (64, 6))
    fragile = (rng.uniform(0.5, 1.0, (64, 6)) * signs).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "robust"], ["h"], name="robust_mm"),
            helper.make_node("MatMul", ["h", "fragile"], ["scores"], name="fragile_mm"),
        ],
        "g",
        [vin("x", ["N", 64])],
        [vin("scores", ["N", 6])],
        [numpy_helper.from_array(robust, "robust"), numpy_helper.from_array(fragile, "fragile")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_data(path, n: int = 200, seed: int = 1) -> None:
    x = np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32)
    np.savez(path, x=x)
