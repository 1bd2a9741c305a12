"""Small float models built with onnx.helper for the int8 tests and benchmarks."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits, opset: int = 13, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    ops = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=ops)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_net(
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
    return _model(nodes, [x], [y], inits)


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
    return _model(nodes, [ids], [out], inits)
