"""The test models, built with onnx.helper: one module, one set of helpers.

- weights hiding places (conv_net, mlp_with_constants, if_model, loop_model, ...), opset 17;
- the int8 flow's models (int8_conv_net, transformer), opset 13 like the exporters'
  defaults for quantization;
- auto's robust/fragile model and its data.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(
    nodes,
    inputs,
    outputs,
    inits,
    opset: int = 17,
    extra_opsets=(),
    *,
    ir_version: int | None = None,
    full_check: bool = True,
    **kw,
):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets, **kw)
    model.ir_version = ir_version or (8 if opset >= 15 else 7)
    onnx.checker.check_model(model, full_check=full_check)
    return model


def _int8_model(nodes, inputs, outputs, inits, opset: int = 13, extra_opsets=()):
    """The int8 tests' models: IR 8 at any opset, checked without shape inference."""
    return _model(
        nodes, inputs, outputs, inits, opset, extra_opsets, ir_version=8, full_check=False
    )


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


def table_model(seed: int = 0) -> onnx.ModelProto:
    """Token ids -> Gather(table [1024, 32]) -> MatMul: a table big enough for int4 rows."""
    rng = _rng(seed)
    table = rng.standard_normal((1024, 32)).astype(np.float32)
    w = rng.standard_normal((32, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("MatMul", ["emb", "w"], ["y"]),
    ]
    return _model(
        nodes, [vin("ids", ["N"], TensorProto.INT64)], [vin("y", ["N", 8])],
        [_init("table", table), _init("w", w)],
    )  # fmt: skip


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


# -- the int8 flow's models ------------------------------------------------------------


def int8_conv_net(
    seed: int = 0,
    channels: int = 16,
    size: int | str = 16,
    classes: int = 10,
    softmax: bool = True,
) -> onnx.ModelProto:
    """Conv-BN-Relu x2 with a residual Add, MaxPool, GAP, Flatten, Gemm (, Softmax)."""
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        _init("w0", rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.3),
        _init("b0", rng.standard_normal(c).astype(np.float32) * 0.1),
        _init("w1", rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.1),
        _init("b1", rng.standard_normal(c).astype(np.float32) * 0.1),
        _init("bn_s", (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)),
        _init("bn_b", (0.1 * rng.standard_normal(c)).astype(np.float32)),
        _init("bn_m", (0.1 * rng.standard_normal(c)).astype(np.float32)),
        _init("bn_v", (1 + 0.1 * rng.random(c)).astype(np.float32)),
        _init("w2", rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.1),
        _init("fc_w", rng.standard_normal((classes, c)).astype(np.float32) * 0.3),
        _init("fc_b", rng.standard_normal(classes).astype(np.float32) * 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node(
            "BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"], name="bn1"
        ),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r0"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node(
            "MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"
        ),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
        out = "probs"
    hw = [size, size] if isinstance(size, int) else ["H", "W"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, *hw])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes])
    return _int8_model(nodes, [x], [y], inits)


def transformer(
    seed: int = 0, vocab: int = 64, dim: int = 32, ff: int = 64, layers: int = 2, classes: int = 4
) -> onnx.ModelProto:
    """Token ids -> Gather embedding + positions -> encoder layers (decomposed LayerNorm,
    single-head attention with Softmax, Gelu-free Relu FFN) -> mean pool -> classifier."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def w(name, *shape, scale=None):
        s = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        inits.append(_init(name, (rng.standard_normal(shape) * s).astype(np.float32)))
        return name

    def const(name, value):
        inits.append(_init(name, np.asarray(value)))
        return name

    def node(op, ins, outs, **kw):
        nodes.append(helper.make_node(op, ins, outs, name=outs[0] + "_" + op, **kw))
        return outs[0]

    const("two", np.float32(2.0))
    const("eps", np.float32(1e-5))
    const("inv_sqrt_d", np.float32(1.0 / np.sqrt(dim)))
    emb = node("Gather", [w("emb", vocab, dim, scale=1.0), "ids"], ["emb_out"])
    pos = w("pos", 1, 16, dim, scale=0.3)
    nodes.append(helper.make_node("Shape", ["ids"], ["ids_shape"], name="shape"))
    const("zero_i", np.array([0], np.int64))
    const("one_i", np.array([1], np.int64))
    const("two_i", np.array([2], np.int64))
    node("Slice", ["ids_shape", "one_i", "two_i"], ["seq_len"])
    node("Slice", [pos, "zero_i", "seq_len", "one_i"], ["pos_used"])
    h = node("Add", [emb, "pos_used"], ["h0"])

    def layer_norm(x, tag):
        mean = node("ReduceMean", [x], [f"{tag}_mean"], axes=[-1])
        d = node("Sub", [x, mean], [f"{tag}_d"])
        sq = node("Pow", [d, "two"], [f"{tag}_sq"])
        var = node("ReduceMean", [sq], [f"{tag}_var"], axes=[-1])
        ve = node("Add", [var, "eps"], [f"{tag}_ve"])
        sd = node("Sqrt", [ve], [f"{tag}_sd"])
        n = node("Div", [d, sd], [f"{tag}_n"])
        g = const(f"{tag}_g", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32))
        b = const(f"{tag}_b", (0.1 * rng.standard_normal(dim)).astype(np.float32))
        return node("Add", [node("Mul", [n, g], [f"{tag}_ng"]), b], [f"{tag}_out"])

    def linear(x, tag, n_in, n_out):
        y = node("MatMul", [x, w(f"{tag}_w", n_in, n_out)], [f"{tag}_mm"])
        b = const(f"{tag}_b", (0.05 * rng.standard_normal(n_out)).astype(np.float32))
        return node("Add", [y, b], [f"{tag}_out"])

    for i in range(layers):
        t = f"l{i}"
        q = linear(h, f"{t}_q", dim, dim)
        k = linear(h, f"{t}_k", dim, dim)
        v = linear(h, f"{t}_v", dim, dim)
        kt = node("Transpose", [k], [f"{t}_kt"], perm=[0, 2, 1])
        s = node("MatMul", [q, kt], [f"{t}_s"])
        s = node("Mul", [s, "inv_sqrt_d"], [f"{t}_ss"])
        p = node("Softmax", [s], [f"{t}_p"], axis=-1)
        a = node("MatMul", [p, v], [f"{t}_a"])
        o = linear(a, f"{t}_o", dim, dim)
        h = layer_norm(node("Add", [h, o], [f"{t}_res1"]), f"{t}_ln1")
        f = node("Relu", [linear(h, f"{t}_f1", dim, ff)], [f"{t}_f1r"])
        f = linear(f, f"{t}_f2", ff, dim)
        h = layer_norm(node("Add", [h, f], [f"{t}_res2"]), f"{t}_ln2")
    pooled = node("ReduceMean", [h], ["pooled"], axes=[1], keepdims=0)
    logits = node("Gemm", [pooled, w("cls_w", dim, classes)], ["logits"])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "T"])
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])
    return _int8_model(nodes, [ids], [out], inits)


# -- auto ------------------------------------------------------------------------------


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


def ort_session(path, optimized=None):
    """A quiet CPU session; with ``optimized``, onnxruntime writes its optimized graph
    there (to see what a decode folded into)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
