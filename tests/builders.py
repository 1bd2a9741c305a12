"""Small models, built with onnx.helper, each exercising one place where weights hide."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits, opset: int = 17, extra_opsets=(), **kw):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, **kw)
    model.ir_version = 8 if opset >= 15 else 7
    onnx.checker.check_model(model, full_check=True)
    return model


def vin(name: str, shape, dtype=FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def conv_net(opset: int = 17, seed: int = 0, zero_bias: bool = False) -> onnx.ModelProto:
    """Conv -> Relu -> ConvTranspose -> GlobalAveragePool -> Flatten -> Gemm, dynamic batch."""
    rng = _rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    b1 = np.zeros(8, np.float32) if zero_bias else rng.standard_normal(8).astype(np.float32)
    wt = rng.standard_normal((8, 6, 2, 2)).astype(np.float32) * 0.3
    wg = rng.standard_normal((10, 6)).astype(np.float32)
    bg = rng.standard_normal(10).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("ConvTranspose", ["r1", "wt"], ["ct"], name="deconv", strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ct"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"], name="fc", transB=1),
    ]
    inits = [_init("w1", w1), _init("b1", b1), _init("wt", wt), _init("wg", wg), _init("bg", bg)]
    return _model(nodes, [vin("x", ["N", 3, 8, 8])], [vin("logits", ["N", 10])], inits, opset=opset)


def mlp_with_constants(seed: int = 0) -> onnx.ModelProto:
    """Weights in Constant nodes and one computed by a constant subgraph (Transpose)."""
    rng = _rng(seed)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w2t = rng.standard_normal((4, 32)).astype(np.float32)  # stored transposed
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=_init("w1v", w1)),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Transpose", ["w2t"], ["w2"], perm=[1, 0]),
        helper.make_node("MatMul", ["hr", "w2"], ["y"], name="mm2"),
    ]
    return _model(nodes, [vin("x", ["N", 16])], [vin("y", ["N", 4])], [_init("w2t", w2t)])


def if_model(seed: int = 0) -> onnx.ModelProto:
    """Each If branch multiplies by its own weight held inside the branch."""
    rng = _rng(seed)

    def branch(name: str, w: np.ndarray):
        return helper.make_graph(
            [
                helper.make_node("Constant", [], [f"{name}_w"], value=_init(f"{name}_wv", w)),
                helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_y"]),
            ],
            name,
            [],
            [vin(f"{name}_y", ["N", 8])],
        )

    wa = rng.standard_normal((8, 8)).astype(np.float32)
    wb = rng.standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node(
            "If",
            ["cond"],
            ["y"],
            name="if",
            then_branch=branch("then", wa),
            else_branch=branch("else", wb),
        )
    ]
    return _model(
        nodes, [vin("x", ["N", 8]), vin("cond", [], TensorProto.BOOL)], [vin("y", ["N", 8])], []
    )


def shared_weight_model(seed: int = 0) -> onnx.ModelProto:
    """One weight read by two MatMuls."""
    rng = _rng(seed)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="mm_a"),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("MatMul", ["ar", "w"], ["y"], name="mm_b"),
    ]
    return _model(nodes, [vin("x", ["N", 8])], [vin("y", ["N", 8])], [_init("w", w)])


def ml_domain_model(seed: int = 0) -> onnx.ModelProto:
    """Gemm scores post-processed by ai.onnx.ml ops, with a label dictionary in metadata."""
    rng = _rng(seed)
    w = rng.standard_normal((3, 16)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["scores"], name="fc", transB=1),
        helper.make_node("Normalizer", ["scores"], ["probs"], domain="ai.onnx.ml", norm="L1"),
        helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
    ]
    model = _model(
        nodes,
        [vin("x", ["N", 16])],
        [vin("probs", ["N", 3]), vin("label", ["N"], TensorProto.INT64)],
        [_init("w", w)],
        extra_opsets=[helper.make_opsetid("ai.onnx.ml", 3)],
    )
    helper.set_model_props(model, {"classes": "cat,dog,bird"})
    return model


def embedding_model(seed: int = 0) -> onnx.ModelProto:
    """Token ids -> Gather(embedding table) -> MatMul, opset 12, dynamic batch and length."""
    rng = _rng(seed)
    table = rng.standard_normal((50, 16)).astype(np.float32)
    w = rng.standard_normal((16, 4)).astype(np.float32)
    zero = np.zeros(4, np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "w"], ["proj"], name="proj"),
        helper.make_node("Add", ["proj", "zero_bias"], ["y"], name="bias_add"),
        helper.make_node("Relu", ["y"], ["out"]),
    ]
    return _model(
        nodes,
        [vin("ids", ["N", "T"], TensorProto.INT64)],
        [vin("out", ["N", "T", 4])],
        [_init("table", table), _init("w", w), _init("zero_bias", zero)],
        opset=12,
    )


def big_matmul_model(rows: int, cols: int) -> onnx.ModelProto:
    """One huge weight (for the external-data path); built without checker's 2 GB limit."""
    w = np.full((rows, cols), 0.5, np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "big",
        [vin("x", [1, rows])],
        [vin("y", [1, cols])],
        [_init("w", w)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def loop_model(seed: int = 0) -> onnx.ModelProto:
    """A Loop whose body multiplies the carried state by a weight held in the body."""
    rng = _rng(seed)
    w = (rng.standard_normal((8, 8)) * 0.3).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=_init("wv", w)),
            helper.make_node("MatMul", ["h_in", "w"], ["h_mm"], name="body_mm"),
            helper.make_node("Tanh", ["h_mm"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            vin("i", [], TensorProto.INT64),
            vin("cond_in", [], TensorProto.BOOL),
            vin("h_in", ["N", 8]),
        ],
        [vin("cond_out", [], TensorProto.BOOL), vin("h_out", ["N", 8])],
    )
    nodes = [helper.make_node("Loop", ["trips", "", "x"], ["y"], name="loop", body=body)]
    return _model(
        nodes,
        [vin("x", ["N", 8]), vin("trips", [], TensorProto.INT64)],
        [vin("y", ["N", 8])],
        [],
    )
