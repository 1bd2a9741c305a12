"""--pack with int8 weights: pruned int8 tensors stored packed, decoded by onnxruntime at
load into the same int8 tensors, so the same kernels fuse and the outputs are identical."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import ort_session
from onnx import helper, numpy_helper

from onnxcomp import compress
from onnxcomp.cli import main

DECODE_OPS = {"BitShift", "Mod", "CumSum", "ScatterElements", "ConstantOfShape", "Gather"}


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    wc = rng.standard_normal((64, 16, 3, 3)).astype(np.float32) * 0.2
    bc = rng.standard_normal(64).astype(np.float32) * 0.1
    wg = rng.standard_normal((128, 64)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 128])],
        [numpy_helper.from_array(a, n) for a, n in ((wc, "wc"), (bc, "bc"), (wg, "wg"))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


_session = ort_session


@pytest.fixture
def setup(save_model, tmp_path):
    src = save_model(_model())
    calib = tmp_path / "calib.npz"
    x = np.random.default_rng(1).standard_normal((16, 16, 8, 8)).astype(np.float32)
    np.savez(calib, x=x)
    return src, calib, {"x": x[:4]}


@pytest.mark.parametrize("mode", ["int8", "weights"])
def test_pruned_int8_packs_smaller_and_runs_identically(setup, tmp_path, mode):
    src, calib, feed = setup
    opts = dict(quantize=mode, prune_sparsity=0.8, calib=calib if mode == "int8" else None)
    plain, packed = tmp_path / "plain.onnx", tmp_path / "packed.onnx"
    r1 = compress(src, plain, measure=False, **opts)
    r2 = compress(src, packed, measure=False, pack=True, **opts)
    # 80% zeros: the kept fifth's codes plus their gaps (or a 1-bit mask) cost under
    # half of 8 bits a weight, decode chains included
    weights = 64 * 16 * 9 + 128 * 64
    assert r1.output_bytes - r2.output_bytes > 0.5 * weights
    assert any("packed 2 int8 weights" in n for n in r2.notes), r2.notes
    onnx.checker.check_model(onnx.load(packed), full_check=True)
    a = _session(plain, tmp_path / "o1.onnx").run(None, feed)
    b = _session(packed, tmp_path / "o2.onnx").run(None, feed)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)  # the decode is exact
    ops1 = sorted(n.op_type for n in onnx.load(tmp_path / "o1.onnx").graph.node)
    ops2 = sorted(n.op_type for n in onnx.load(tmp_path / "o2.onnx").graph.node)
    assert ops1 == ops2  # the same kernels fused: nothing of the decode survives load
    assert not set(ops2) & DECODE_OPS
    if mode == "int8":
        assert {"QLinearConv", "QGemm"} <= set(ops2)


def test_dense_int8_is_left_as_it_is(setup, tmp_path):
    src, _, _ = setup
    plain, packed = tmp_path / "plain.onnx", tmp_path / "packed.onnx"
    compress(src, plain, quantize="weights")
    r = compress(src, packed, quantize="weights", pack=True)
    # every int8 level in use, no zeros to skip: packing would only add the decode
    assert packed.read_bytes() == plain.read_bytes() and not any("packed" in n for n in r.notes)


def test_pack_needs_a_mode_it_can_pack(setup, tmp_path, capsys):
    src, _, _ = setup
    code = main(["compress", str(src), "-o", str(tmp_path / "o.onnx"), "--pack"])
    assert code == 2
    assert "--pack stores codebook codes or int8 weights" in capsys.readouterr().err
