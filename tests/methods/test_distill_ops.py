"""The distillation op table against onnxruntime, per op family, on small built graphs.

Tolerances: float32 results of the same math in another order differ by a few units in
the last place per operation; the largest graphs here sum at most 64 products, so
|error| <= 64 * 2**-24 * sum|terms| ~ 4e-6 of the magnitudes: rtol 1e-5, atol 1e-5 on
values of order one. Integer outputs and quantization codes must be equal exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from onnxcomp.errors import OnnxcompError  # noqa: E402
from onnxcomp.methods.distill.ops.common import tensor_of  # noqa: E402
from onnxcomp.methods.distill.optable import run_graph, unsupported  # noqa: E402

pytestmark = pytest.mark.distill
RTOL = ATOL = 1e-5
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(nodes, inputs, outputs, inits=(), opset=18, ms=False) -> onnx.ModelProto:
    """Outputs untyped: onnxruntime types them by inference."""
    outputs = [helper.make_empty_tensor_value_info(o.name) for o in outputs]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    imports = [helper.make_opsetid("", opset)] + (
        [helper.make_opsetid("com.microsoft", 1)] if ms else []
    )
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10 if opset >= 21 else 8
    return model


def _vi(name: str, dtype: int = F, shape: Any = None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _init(name: str, array: np.ndarray):
    return numpy_helper.from_array(array, name)


def _both(proto: onnx.ModelProto, feed: dict[str, np.ndarray], **kw: Any) -> list[tuple]:
    """(ours, onnxruntime's) per output; onnxruntime without graph rewrites."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ref = sess.run(None, feed)
    model = ir.from_proto(proto)
    assert unsupported(model.graph) == []
    env = {n: tensor_of(v.const_value.numpy()) for n, v in model.graph.initializers.items()}
    env.update({k: torch.from_numpy(np.array(v)) for k, v in feed.items()})
    out = run_graph(model.graph, env)
    return [
        (out[o.name].detach().numpy(), r) for o, r in zip(model.graph.outputs, ref, strict=True)
    ]


def _check(proto, feed, exact: bool = False, **kw) -> None:
    for mine, ref in _both(proto, feed):
        assert mine.shape == ref.shape
        if exact or ref.dtype.kind in "iub":
            np.testing.assert_array_equal(mine.astype(ref.dtype), ref)
        else:
            np.testing.assert_allclose(
                mine, ref, rtol=kw.get("rtol", RTOL), atol=kw.get("atol", ATOL)
            )


RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_names_are_the_table():
    from onnxcomp.methods.distill.ops import names
    from onnxcomp.methods.distill.ops.program import MAKERS

    assert {*MAKERS[""], "If"} == names.ONNX
    assert set(MAKERS["com.microsoft"]) == names.MICROSOFT


def test_math_family():
    nodes = [
        helper.make_node("Erf", ["x"], ["erf"]),
        helper.make_node("Gelu", ["x"], ["gelu"], approximate="tanh"),
        helper.make_node("Abs", ["x"], ["abs"]),
        helper.make_node("Sqrt", ["abs"], ["sqrt"]),
        helper.make_node("Pow", ["x", "three"], ["pow"]),
        helper.make_node("Add", ["abs", "one"], ["one_plus"]),
        helper.make_node("Reciprocal", ["one_plus"], ["recip"]),
        helper.make_node("Log", ["one_plus"], ["log"]),
        helper.make_node("Exp", ["x"], ["exp"]),
        helper.make_node("Neg", ["x"], ["neg"]),
        helper.make_node("Max", ["x", "neg", "erf"], ["max"]),
        helper.make_node("Min", ["x", "neg"], ["min"]),
        helper.make_node("HardSigmoid", ["x"], ["hsig"], alpha=0.3, beta=0.4),
        helper.make_node("HardSwish", ["x"], ["hswish"]),
        helper.make_node("LeakyRelu", ["x"], ["leaky"], alpha=0.2),
        helper.make_node("PRelu", ["x", "slope"], ["prelu"]),
        helper.make_node(
            "LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-3
        ),
        helper.make_node("ReduceMean", ["x", "axes"], ["rmean"], keepdims=1),
        helper.make_node("ReduceSum", ["x", "axes"], ["rsum"], keepdims=0),
        helper.make_node("ReduceMax", ["x"], ["rmax"], keepdims=0),
        helper.make_node("Softmax", ["x"], ["soft"], axis=1),
        helper.make_node("Less", ["x", "neg"], ["less"]),
        helper.make_node("Greater", ["x", "erf"], ["greater"]),
        helper.make_node("Equal", ["less", "greater"], ["eq"]),
        helper.make_node("Not", ["eq"], ["noteq"]),
        helper.make_node("And", ["noteq", "less"], ["both"]),
        helper.make_node("Where", ["both", "x", "exp"], ["where"]),
        helper.make_node("Einsum", ["x", "x"], ["einsum"], equation="bij,bkj->bik"),
        helper.make_node("Div", ["ints", "threes"], ["idiv"]),
        helper.make_node("Gemm", ["m", "w", "c"], ["gemm"], transB=1, alpha=0.5, beta=2.0),
    ]
    outs = [
        "erf",
        "gelu",
        "sqrt",
        "pow",
        "recip",
        "log",
        "max",
        "min",
        "hsig",
        "hswish",
        "leaky",
        "prelu",
        "ln",
        "rmean",
        "rsum",
    ]
    outs += ["rmax", "soft", "eq", "where", "einsum", "idiv", "gemm"]
    inits = [
        _init("three", np.array(3.0, np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("slope", _x(5)),
        _init("gamma", _x(5)),
        _init("beta", _x(5)),
        _init("axes", np.array([1, -1], np.int64)),
        _init("threes", np.array([3, -3], np.int64)),
        _init("w", _x(6, 5)),
        _init("c", _x(6)),
    ]
    proto = _model(
        nodes, [_vi("x"), _vi("ints", I64), _vi("m")], [_vi(o) for o in outs], inits, opset=20
    )
    feed = {"x": _x(2, 4, 5), "ints": np.array([7, -7], np.int64), "m": _x(3, 5)}
    _check(proto, feed)


@pytest.mark.parametrize("opset", [11, 13])
def test_shape_family(opset):
    axes = {"axes": [0, 2]} if opset < 13 else {}
    ax_in = [] if opset < 13 else ["ax"]
    split_in = ["x"] + ([] if opset < 13 else ["sizes"])
    split_attr = {"split": [1, 3]} if opset < 13 else {}
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Size", ["x"], ["size"]),
        helper.make_node("Unsqueeze", ["x", *ax_in], ["unsq"], **axes),
        helper.make_node("Squeeze", ["unsq", *ax_in], ["sq"], **axes),
        helper.make_node("Slice", ["x", "starts", "ends", "saxes", "steps"], ["slice"]),
        helper.make_node("Split", split_in, ["s1", "s2"], axis=1, **split_attr),
        helper.make_node("Concat", ["s2", "s1"], ["cat"], axis=1),
        helper.make_node("Expand", ["col", "shape"], ["expand"]),
        helper.make_node("Tile", ["x", "reps"], ["tile"]),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["zeros"], value=helper.make_tensor("v", F, [1], [2.5])
        ),
        helper.make_node("Range", ["r0", "r1", "r2"], ["range"]),
        helper.make_node("Gather", ["x", "idx"], ["gather"], axis=1),
        helper.make_node("Pad", ["x", "pads", "pval"], ["padc"], mode="constant"),
        helper.make_node("Pad", ["x", "pads"], ["padr"], mode="reflect"),
        helper.make_node("Pad", ["x", "pads"], ["pade"], mode="edge"),
        helper.make_node("ArgMax", ["x"], ["argmax"], axis=2, keepdims=0),
        helper.make_node("Transpose", ["x"], ["tr"], perm=[2, 0, 1]),
        helper.make_node("Reshape", ["x", "rshape"], ["resh"]),
        helper.make_node("Flatten", ["x"], ["flat"], axis=2),
        helper.make_node("Cast", ["shape"], ["fshape"], to=F),
    ]
    outs = ["size", "sq", "slice", "cat", "expand", "tile", "zeros", "range", "gather", "padc",
            "padr", "pade", "argmax", "tr", "resh", "flat", "fshape"]  # fmt: skip
    inits = [
        _init("ax", np.array([0, -1], np.int64)),
        _init("sizes", np.array([1, 3], np.int64)),
        _init("starts", np.array([-1, 1], np.int64)),
        _init("ends", np.array([-100, 100], np.int64)),
        _init("saxes", np.array([2, 1], np.int64)),
        _init("steps", np.array([-2, 2], np.int64)),
        _init("col", _x(4, 1)),
        _init("reps", np.array([1, 2, 1], np.int64)),
        _init("r0", np.array(5, np.int64)),
        _init("r1", np.array(-3, np.int64)),
        _init("r2", np.array(-2, np.int64)),
        _init("idx", np.array([[-1, 0], [2, 2]], np.int64)),
        _init("pads", np.array([0, 1, 2, 0, 2, 1], np.int64)),
        _init("pval", np.array(-7.0, np.float32)),
        _init("rshape", np.array([0, -1], np.int64)),
    ]
    proto = _model(nodes, [_vi("x")], [_vi(o) for o in outs], inits, opset=opset)
    _check(proto, {"x": _x(2, 4, 5)})


def test_nn_family():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["same"], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Conv", ["x", "w", "b"], ["asym"], pads=[0, 1, 2, 1], group=1),
        helper.make_node(
            "Conv", ["x", "wg"], ["grouped"], group=3, dilations=[2, 1], pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "ConvTranspose",
            ["x", "wt", "bt"],
            ["convt"],
            strides=[2, 2],
            pads=[2, 0, 1, 1],
            output_padding=[1, 0],
        ),
        helper.make_node(
            "MaxPool", ["x"], ["maxc"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1
        ),
        helper.make_node("MaxPool", ["x"], ["maxs"], kernel_shape=[2, 3], auto_pad="SAME_LOWER"),
        helper.make_node(
            "AveragePool",
            ["x"],
            ["avgc"],
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            ceil_mode=1,
        ),
        helper.make_node("AveragePool", ["x"], ["avga"], kernel_shape=[3, 2], pads=[0, 1, 2, 0]),
        helper.make_node(
            "AveragePool",
            ["x"],
            ["avgi"],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
        ),
        helper.make_node("BatchNormalization", ["x", "g", "bb", "mu", "var"], ["bn"]),
        helper.make_node("GlobalMaxPool", ["x"], ["gmax"]),
        helper.make_node("GlobalAveragePool", ["x"], ["gavg"]),
        helper.make_node(
            "Resize",
            ["x", "", "scales"],
            ["near"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["near_hp"], mode="nearest"),
        helper.make_node("Resize", ["x", "", "scales"], ["lin"], mode="linear"),
        helper.make_node(
            "Resize",
            ["x", "", "", "sizes"],
            ["lin_ac"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        ),
    ]
    outs = ["same", "asym", "grouped", "convt", "maxc", "maxs", "avgc", "avga", "avgi", "bn",
            "gmax", "gavg", "near", "near_hp", "lin", "lin_ac"]  # fmt: skip
    var = np.abs(_x(3)) + 0.5
    inits = [
        _init("w", _x(4, 3, 3, 3)),
        _init("b", _x(4)),
        _init("wg", _x(6, 1, 3, 3)),
        _init("wt", _x(3, 2, 3, 3)),
        _init("bt", _x(2)),
        _init("g", _x(3)),
        _init("bb", _x(3)),
        _init("mu", _x(3)),
        _init("var", var),
        _init("scales", np.array([1, 1, 2, 3], np.float32)),
        _init("sizes", np.array([1, 3, 5, 13], np.int64)),
    ]
    proto = _model(nodes, [_vi("x")], [_vi(o) for o in outs], inits, opset=19)
    _check(proto, {"x": _x(1, 3, 7, 9)})


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_and_gru(direction):
    dirs, hidden, n_in = (2 if direction == "bidirectional" else 1), 4, 3
    nodes = [
        helper.make_node(
            "LSTM",
            ["x", "w", "r", "b", "", "h0", "c0"],
            ["y", "yh", "yc"],
            hidden_size=hidden,
            direction=direction,
        ),
        helper.make_node(
            "GRU",
            ["x", "gw", "gr", "gb", "", "h0"],
            ["gy", "gyh"],
            hidden_size=hidden,
            direction=direction,
            linear_before_reset=1,
        ),
        helper.make_node(
            "GRU",
            ["x", "gw", "gr", "gb"],
            ["gy0", "gyh0"],
            hidden_size=hidden,
            direction=direction,
            linear_before_reset=0,
        ),
    ]
    inits = [
        _init("w", _x(dirs, 4 * hidden, n_in)),
        _init("r", _x(dirs, 4 * hidden, hidden)),
        _init("b", _x(dirs, 8 * hidden)),
        _init("gw", _x(dirs, 3 * hidden, n_in)),
        _init("gr", _x(dirs, 3 * hidden, hidden)),
        _init("gb", _x(dirs, 6 * hidden)),
    ]
    outs = ["y", "yh", "yc", "gy", "gyh", "gy0", "gyh0"]
    proto = _model(nodes, [_vi("x"), _vi("h0"), _vi("c0")], [_vi(o) for o in outs], inits, opset=14)
    feed = {"x": _x(5, 2, n_in), "h0": _x(dirs, 2, hidden), "c0": _x(dirs, 2, hidden)}
    _check(proto, feed)


def test_if_runs_the_branch_its_condition_picks():
    then_w, else_w = _x(5, 3), _x(5, 3)
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "tw"], ["t_out"])],
        "then",
        [],
        [_vi("t_out")],
        [_init("tw", then_w)],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "ew"], ["e_mm"]),
            helper.make_node("Relu", ["e_mm"], ["e_out"]),
        ],
        "else",
        [],
        [_vi("e_out")],
        [_init("ew", else_w)],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    proto = _model(nodes, [_vi("x")], [_vi("y")], [_init("zero", np.array(0, np.float32))])
    x = np.abs(_x(2, 5))
    _check(proto, {"x": x})
    _check(proto, {"x": -x})
    # a trained weight inside a branch is substituted by name
    model = ir.from_proto(proto)
    env = {"zero": torch.tensor(0.0), "x": torch.from_numpy(x), "tw": torch.zeros(5, 3)}
    assert not run_graph(model.graph, env)["y"].any()


def _codes(proto, feed):
    ((mine, ref),) = _both(proto, feed)
    return mine, ref


@pytest.mark.parametrize("dtype", [TensorProto.UINT8, TensorProto.INT8])
def test_quantize_linear_rounds_ties_to_even_and_saturates(dtype):
    scale, zero = 0.25, (3 if dtype == TensorProto.UINT8 else -2)
    halves = (np.arange(-600, 600) + 0.5).astype(np.float32) * scale  # every tie, exact
    x = np.concatenate([halves, np.float32([1e9, -1e9, 0.0])]).reshape(1, -1)
    np_zero = np.array(zero, np.uint8 if dtype == TensorProto.UINT8 else np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    inits = [_init("s", np.array(scale, np.float32)), _init("z", np_zero)]
    proto = _model(nodes, [_vi("x")], [_vi("q", dtype)], inits, opset=13)
    mine, ref = _codes(proto, {"x": x})
    np.testing.assert_array_equal(mine.astype(ref.dtype), ref)
    assert mine.min() == ref.min() and ref.min() in (0, -128)  # saturated both ways


def test_quantize_gradient_is_straight_through_inside_the_range():
    from onnxcomp.methods.distill.ops.quant import fake_round

    v = torch.tensor([-300.0, -1.5, 0.5, 2.5, 300.0], requires_grad=True)
    q = fake_round(v, torch.tensor(0.0), -128, 127)
    q.sum().backward()
    assert q.tolist() == [-128.0, -2.0, 0.0, 2.0, 127.0]
    assert v.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_qdq_per_axis_and_blocks():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_axis", "z_axis"], ["q"], axis=1),
        helper.make_node("DequantizeLinear", ["q", "s_axis", "z_axis"], ["dq"], axis=1),
        helper.make_node("DequantizeLinear", ["w4", "s_block"], ["w"], axis=0, block_size=4),
        helper.make_node(
            "DequantizeLinear", ["u4", "s_block", "z_block"], ["wu"], axis=0, block_size=4
        ),
        helper.make_node("MatMul", ["dq", "w"], ["y"]),
        helper.make_node("MatMul", ["dq", "wu"], ["yu"]),
    ]
    w4 = helper.make_tensor("w4", TensorProto.INT4, [10, 3], RNG.integers(-8, 8, 30).tolist())
    u4 = helper.make_tensor("u4", TensorProto.UINT4, [10, 3], RNG.integers(0, 16, 30).tolist())
    z_block = helper.make_tensor(
        "z_block", TensorProto.UINT4, [3, 3], RNG.integers(0, 16, 9).tolist()
    )
    inits = [
        _init("s_axis", np.array([0.05, 0.1] * 5, np.float32)),
        _init("z_axis", RNG.integers(0, 20, 10).astype(np.uint8)),
        w4,
        u4,
        z_block,
        _init("s_block", (np.abs(_x(3, 3)) + 0.1)),
    ]
    proto = _model(nodes, [_vi("x")], [_vi("y"), _vi("yu")], inits, opset=21)
    _check(proto, {"x": _x(4, 10)})


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    codes = codes.astype(np.uint8)
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.uint8)], -1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


@pytest.mark.parametrize("zeros", ["none", "packed", "float"])
def test_matmul_nbits_decodes_its_packed_codes(zeros):
    k, n, block = 40, 6, 16
    blocks = -(-k // block)
    codes = RNG.integers(0, 16, (n, blocks, block))
    b = _pack_nibbles(codes)  # [N, blocks, block / 2]
    scales = (np.abs(_x(n, blocks)) + 0.05).reshape(-1)
    ins = ["a", "b", "scales"]
    inits = [_init("b", b), _init("scales", scales)]
    if zeros == "packed":
        ins.append("zp")
        inits.append(_init("zp", _pack_nibbles(RNG.integers(0, 16, (n, blocks)))))
    elif zeros == "float":
        ins.append("zp")
        inits.append(_init("zp", (RNG.integers(0, 16, (n * blocks)) * 1.0).astype(np.float32)))
    node = helper.make_node(
        "MatMulNBits", ins, ["y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=block
    )
    proto = _model([node], [_vi("a")], [_vi("y")], inits, opset=21, ms=True)
    _check(proto, {"a": _x(3, k)}, rtol=1e-4)  # onnxruntime accumulates in its own order


def test_gather_block_quantized():
    data = helper.make_tensor("t", TensorProto.INT4, [5, 32], RNG.integers(-8, 8, 160).tolist())
    node = helper.make_node(
        "GatherBlockQuantized",
        ["t", "ids", "s"],
        ["y"],
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=16,
    )
    inits = [data, _init("s", np.abs(_x(5, 2)) + 0.1)]
    proto = _model([node], [_vi("ids", I64)], [_vi("y")], inits, opset=21, ms=True)
    _check(proto, {"ids": np.array([[4, 0, 2]], np.int64)})


def test_integer_kernels():
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=F),
        helper.make_node("Mul", ["accf", "xs"], ["mm"]),
        helper.make_node("QuantizeLinear", ["img", "is", "iz"], ["imgq"]),
        helper.make_node("ConvInteger", ["imgq", "cw", "iz"], ["cacc"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "QLinearConv", ["imgq", "is", "iz", "cw", "cs", "cz", "ys", "yz", "cb"], ["qc"]
        ),
        helper.make_node("QuantizeLinear", ["x", "is", "iz"], ["aq"]),
        helper.make_node("QLinearMatMul", ["aq", "is", "iz", "wq", "ws", "wz", "ys", "yz"], ["qm"]),
    ]
    inits = [
        _init("wq", RNG.integers(-127, 128, (16, 8)).astype(np.int8)),
        _init("wz", np.int8(0)),
        _init("is", np.array(0.02, np.float32)),
        _init("iz", np.array(128, np.uint8)),
        _init("cw", RNG.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)),
        _init("cs", np.array(0.01, np.float32)),
        _init("cz", np.int8(0)),
        _init("ws", np.array(0.01, np.float32)),
        _init("ys", np.array(0.05, np.float32)),
        _init("yz", np.array(100, np.uint8)),
        _init("cb", RNG.integers(-500, 500, 4).astype(np.int32)),
    ]
    outs = [
        _vi("mm"),
        _vi("cacc", TensorProto.INT32),
        _vi("qc", TensorProto.UINT8),
        _vi("qm", TensorProto.UINT8),
    ]
    proto = _model(nodes, [_vi("x"), _vi("img")], outs, inits, opset=13)
    _check(proto, {"x": _x(3, 16), "img": _x(1, 2, 6, 6)})


def test_cases_it_cannot_run_are_refused_by_name():
    nodes = [helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=2, clip=1.0)]
    inits = [_init("w", _x(1, 8, 3)), _init("r", _x(1, 8, 2))]
    model = ir.from_proto(_model(nodes, [_vi("x")], [_vi("y")], inits))
    env = {"x": torch.zeros(2, 1, 3), "w": torch.zeros(1, 8, 3), "r": torch.zeros(1, 8, 2)}
    with pytest.raises(OnnxcompError, match="LSTM clip"):
        run_graph(model.graph, env)
    cubic = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic")
    model = ir.from_proto(
        _model([cubic], [_vi("x")], [_vi("y")], [_init("s", np.ones(4, np.float32))])
    )
    with pytest.raises(OnnxcompError, match="Resize mode=cubic"):
        run_graph(model.graph, {"x": torch.zeros(1, 1, 2, 2)})
