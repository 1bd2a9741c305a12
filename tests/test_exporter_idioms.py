"""What exporters write, each reproduced on a small built model: scalar constants, LSTM
weights in Constant nodes inside If branches and shared with Slice readers, BatchNorm
after Conv at opset 11, and outputs that would grow."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp import compress
from onnxcomp.cli import main

FLOAT = TensorProto.FLOAT
H, IN = 32, 16  # LSTM hidden and input sizes


def _t(array: np.ndarray, name: str = "") -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _run(path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _floats(path) -> list[tuple[str, int]]:
    """(name, elements) of every float tensor stored anywhere in the file."""
    found = []
    graphs = [onnx.load(str(path)).graph]
    while graphs:
        g = graphs.pop()
        found += [(t.name, int(np.prod(t.dims))) for t in g.initializer if t.data_type == FLOAT]
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    found.append((n.output[0], int(np.prod(a.t.dims))))
                if a.type == onnx.AttributeProto.GRAPH:
                    graphs.append(a.g)
    return found


def lstm_in_if(seed: int = 0) -> onnx.ModelProto:
    """silero-vad's shape: an If whose branches hold the LSTM weights as Constant nodes,
    read both by an LSTM (through Unsqueeze) and by Slice -> MatMul."""
    rng = np.random.default_rng(seed)

    def branch(tag: str) -> onnx.GraphProto:
        w = rng.standard_normal((4 * H, IN)).astype(np.float32) * 0.2
        r = rng.standard_normal((4 * H, H)).astype(np.float32) * 0.2
        nodes = [
            helper.make_node("Constant", [], [f"{tag}_w"], value=_t(w)),
            helper.make_node("Constant", [], [f"{tag}_r"], value=_t(r)),
            helper.make_node("Constant", [], [f"{tag}_ax"], value=_t(np.array([0], np.int64))),
            helper.make_node("Unsqueeze", [f"{tag}_w", f"{tag}_ax"], [f"{tag}_w3"]),
            helper.make_node("Unsqueeze", [f"{tag}_r", f"{tag}_ax"], [f"{tag}_r3"]),
            helper.make_node(
                "LSTM", ["x", f"{tag}_w3", f"{tag}_r3"], ["", f"{tag}_h"], hidden_size=H
            ),
            helper.make_node("Constant", [], [f"{tag}_s0"], value=_t(np.array([0], np.int64))),
            helper.make_node("Constant", [], [f"{tag}_s1"], value=_t(np.array([H], np.int64))),
            helper.make_node("Slice", [f"{tag}_w", f"{tag}_s0", f"{tag}_s1"], [f"{tag}_wi"]),
            helper.make_node("Transpose", [f"{tag}_wi"], [f"{tag}_wit"]),
            helper.make_node("Squeeze", [f"{tag}_h", f"{tag}_ax"], [f"{tag}_h2"]),
            helper.make_node("Gather", ["x", f"{tag}_zero"], [f"{tag}_x0"], axis=0),
            helper.make_node("Constant", [], [f"{tag}_zero"], value=_t(np.array(0, np.int64))),
            helper.make_node("MatMul", [f"{tag}_x0", f"{tag}_wit"], [f"{tag}_lin"]),
            helper.make_node("Add", [f"{tag}_h2", f"{tag}_lin"], [f"{tag}_y"]),
        ]
        # Gather reads the scalar index made after it: order them
        nodes.insert(11, nodes.pop(12))
        out = helper.make_tensor_value_info(f"{tag}_y", FLOAT, [1, H])
        return helper.make_graph(nodes, tag, [], [out])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("a"), else_branch=branch("b"))
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", FLOAT, [5, 1, IN]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", FLOAT, [1, H])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_lstm_weights_in_if_branches_stored_once_as_int8(tmp_path) -> None:
    src, out = tmp_path / "vad.onnx", tmp_path / "vad.w.onnx"
    onnx.save(lstm_in_if(), src)
    result = compress(src, out, quantize="weights")
    onnx.checker.check_model(str(out), full_check=True)
    big = [(n, size) for n, size in _floats(out) if size >= 1024]
    assert big == [], f"float copies left: {big}"
    assert result.size_ratio < 0.35
    x = np.random.default_rng(1).standard_normal((5, 1, IN)).astype(np.float32)
    for c in (True, False):
        feed = {"x": x, "c": np.array(c)}
        ref, got = _run(src, feed)[0], _run(out, feed)[0]
        # int8 rows: relative error ~ 1/254 per weight, summed over IN inputs and 5 steps
        np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())


def test_lstm_weights_in_if_branches_get_codebooks_too(tmp_path) -> None:
    # The LSTM's W and R are no weight slot's: they were left int8 (8 bits) by the
    # codebook mode; now they share its codebooks, a scale per gate row.
    src, out = tmp_path / "vad.onnx", tmp_path / "vad.cb.onnx"
    onnx.save(lstm_in_if(), src)
    result = compress(src, out, quantize="codebook", bits=4, pack=True)
    onnx.checker.check_model(str(out), full_check=True)
    assert [(n, size) for n, size in _floats(out) if size >= 1024] == []
    stored = {r.name: r.storage for r in result.quantized}
    lstm = [name for name in stored if "_w3" in name or "_r3" in name]
    assert lstm and all("codebook k=16" in stored[n] for n in lstm), stored
    x = np.random.default_rng(1).standard_normal((5, 1, IN)).astype(np.float32)
    for c in (True, False):
        feed = {"x": x, "c": np.array(c)}
        ref, got = _run(src, feed)[0], _run(out, feed)[0]
        # 16 values per row-normalised tensor: ~10% relative error per weight, averaged
        # down over IN inputs; the gates' sigmoids/tanh only shrink it
        np.testing.assert_allclose(got, ref, atol=0.15 * np.abs(ref).max())


def test_scalar_and_one_element_constants_in_int8(tmp_path) -> None:
    """0-d and 1-element constants read by Add/Mul/Div (exporters' scalars) quantize."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "s0"], ["h1"]),  # 0-d
        helper.make_node("Mul", ["h1", "s1"], ["h2"]),  # [1]
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("Div", ["h3", "s2"], ["h4"]),
        helper.make_node("MatMul", ["h4", "w2"], ["y"]),
    ]
    inits = [
        _t(w, "w"),
        _t(np.array(0.5, np.float32), "s0"),
        _t(np.array([1.5], np.float32), "s1"),
        _t(np.array(2.0, np.float32), "s2"),
        _t(rng.standard_normal((8, 4)).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    src, out, calib = tmp_path / "s.onnx", tmp_path / "s.int8.onnx", tmp_path / "calib.npz"
    onnx.save(model, src)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    np.savez(calib, x=x)
    compress(src, out, quantize="int8", calib=str(calib), measure=False, allow_larger=True)
    onnx.checker.check_model(str(out))
    ref, got = _run(src, {"x": x})[0], _run(out, {"x": x})[0]
    cos = np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got))
    assert cos > 0.99


def conv_bn_opset11(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    c = 16
    nodes, inits, prev = [], [], "x"
    for i, cin in enumerate((3, c, c)):
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node(
                "BatchNormalization", [f"c{i}", f"g{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"]
            ),
            helper.make_node("Relu", [f"n{i}"], [f"r{i}"]),
        ]
        inits += [
            _t(rng.standard_normal((c, cin, 3, 3)).astype(np.float32) * 0.3, f"w{i}"),
            _t(rng.uniform(0.5, 1.5, c).astype(np.float32), f"g{i}"),
            _t(rng.standard_normal(c).astype(np.float32) * 0.1, f"b{i}"),
            _t(rng.standard_normal(c).astype(np.float32) * 0.1, f"m{i}"),
            _t(rng.uniform(0.5, 2.0, c).astype(np.float32), f"v{i}"),
        ]
        prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info(prev, FLOAT, [1, c, 16, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model, full_check=True)
    return model


def test_batchnorm_after_conv_is_folded(tmp_path) -> None:
    src, out = tmp_path / "bn.onnx", tmp_path / "bn.w.onnx"
    onnx.save(conv_bn_opset11(), src)
    result = compress(src, out, quantize="weights")
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "BatchNormalization" not in ops
    assert any("upgraded opset 11" in n for n in result.notes)
    x = np.random.default_rng(2).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref, got = _run(src, {"x": x})[0], _run(out, {"x": x})[0]
    np.testing.assert_allclose(got, ref, atol=0.03 * np.abs(ref).max())


def test_weight_only_conv_is_decoded_at_load(tmp_path) -> None:
    """onnxruntime folds Cast * scale when the session is created: the Conv gets a
    constant weight, nothing is dequantized per run, and the file keeps int8."""
    src, out = tmp_path / "bn.onnx", tmp_path / "bn.w.onnx"
    onnx.save(conv_bn_opset11(), src)
    compress(src, out, quantize="weights")
    stored = onnx.load(str(out))
    assert sum(t.data_type == TensorProto.INT8 for t in stored.graph.initializer) == 3
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert not ops & {"Cast", "Mul", "DequantizeLinear"}, ops


def test_output_larger_than_input_is_refused(tmp_path, capsys) -> None:
    """One-element channels: int8 + per-channel scales outweigh the float weight."""
    c = 4096
    w = np.random.default_rng(0).standard_normal((c, 1, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=c)],
        "g",
        [helper.make_tensor_value_info("x", FLOAT, [1, c, 2, 2])],
        [helper.make_tensor_value_info("y", FLOAT, [1, c, 2, 2])],
        [_t(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    src, out = tmp_path / "tiny.onnx", tmp_path / "tiny.w.onnx"
    onnx.save(model, src)
    assert main(["compress", str(src), "-o", str(out), "--quantize", "weights"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not written" in err[0]
    assert not out.exists()
    assert (
        main(["compress", str(src), "-o", str(out), "--quantize", "weights", "--allow-larger"]) == 0
    )
    assert out.exists() and "larger than the input" in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["weights", "int8"])
def test_if_model_every_mode_valid(tmp_path, mode) -> None:
    src, out, calib = tmp_path / "vad.onnx", tmp_path / "out.onnx", tmp_path / "c.npz"
    onnx.save(lstm_in_if(), src)
    x = np.random.default_rng(3).standard_normal((5, 1, IN)).astype(np.float32)
    np.savez(calib, x=x[None], c=np.array([True]))
    extra = {"calib": str(calib), "measure": False, "allow_larger": True} if mode == "int8" else {}
    compress(src, out, quantize=mode, **extra)
    onnx.checker.check_model(str(out), full_check=True)
    feed = {"x": x, "c": np.array(True)}
    ref, got = _run(src, feed)[0], _run(out, feed)[0]
    np.testing.assert_allclose(got, ref, atol=0.1 * np.abs(ref).max())


def zipmap_classifier(seed: int = 0) -> onnx.ModelProto:
    """scikit-learn's default export: probabilities as a sequence of maps (ZipMap)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
        helper.make_node("ArgMax", ["prob"], ["label"], axis=1, keepdims=0),
        helper.make_node(
            "ZipMap",
            ["prob"],
            ["probabilities"],
            domain="ai.onnx.ml",
            classlabels_int64s=list(range(4)),
        ),
    ]
    seq_map = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(FLOAT, []))
    )
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 64])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_value_info("probabilities", seq_map),
        ],
        [_t(rng.standard_normal((64, 4)).astype(np.float32), "w")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("mode", ["weights", "int8", "int8+bias", "sparsegpt+int8"])
def test_map_typed_outputs_load_and_survive(tmp_path, mode) -> None:
    """onnx_ir cannot hold map types; the model must still compress, keep its ZipMap
    output typed and predict the same labels (also through recovery, which copies the
    model: the real scikit-learn export lost its output type there)."""
    src, out, calib = tmp_path / "sk.onnx", tmp_path / "sk.out.onnx", tmp_path / "c.npz"
    onnx.save(zipmap_classifier(), src)
    x = np.random.default_rng(4).standard_normal((32, 64)).astype(np.float32)
    np.savez(calib, x=x)
    extra: dict = {"calib": str(calib), "measure": False} if "int8" in mode else {}
    if mode == "int8+bias":
        extra["recover"] = "bias"
    if mode == "sparsegpt+int8":
        extra.update(recover="sparsegpt", prune_sparsity=0.3)
    compress(src, out, quantize="int8" if "int8" in mode else mode, allow_larger=True, **extra)
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved, full_check=True)
    outputs = {o.name: o.type.WhichOneof("value") for o in saved.graph.output}
    assert outputs == {"label": "tensor_type", "probabilities": "sequence_type"}
    ref, got = _run(src, {"x": x})[0], _run(out, {"x": x})[0]
    assert np.mean(ref == got) >= 0.9


@pytest.mark.parametrize("keep", [False, True])
def test_exporter_debug_info_dropped_model_metadata_kept(tmp_path, keep) -> None:
    """torch.onnx's dynamo exporter puts a stack trace on every node; the user's model
    metadata (a label dictionary) must survive."""
    model = conv_bn_opset11()
    model.opset_import[0].version = 13
    for node in model.graph.node:
        node.doc_string = "File model.py, line 12, in forward"
        onnx.helper.set_metadata_props(
            node,
            {
                "pkg.torch.onnx.stack_trace": "x" * 5000,
                "namespace": "conv: aten.conv2d",
                "mine": "keep me",
            },
        )
    onnx.helper.set_model_props(model, {"labels": "cat,dog"})
    src, out = tmp_path / "dbg.onnx", tmp_path / "dbg.w.onnx"
    onnx.save(model, src)
    result = compress(src, out, quantize="weights", keep_debug_info=keep)
    saved = onnx.load(str(out))
    assert {p.key: p.value for p in saved.metadata_props} == {"labels": "cat,dog"}
    relu = next(n for n in saved.graph.node if n.op_type == "Relu")
    keys = {p.key for p in relu.metadata_props}
    if keep:
        assert "pkg.torch.onnx.stack_trace" in keys and relu.doc_string
    else:
        assert keys == {"mine"} and not relu.doc_string
        assert any("debug info" in n for n in result.notes)


def test_inferred_shapes_are_not_written_exporter_ones_are(tmp_path) -> None:
    """int8 placement infers every tensor's shape; only what the input annotated is kept
    (value_info cost 13% of the PaddleOCR classifier's int8 file)."""
    bare = conv_bn_opset11()
    annotated = onnx.shape_inference.infer_shapes(bare)
    assert annotated.graph.value_info  # the exporter annotated every tensor
    calib = tmp_path / "calib.npz"
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    np.savez(calib, x=x)
    for tag, model in (("bare", bare), ("annotated", annotated)):
        src = tmp_path / f"{tag}.onnx"
        onnx.save(model, src)
        had = {v.name for v in model.graph.value_info}
        for mode in ("weights", "int8"):
            out = tmp_path / f"{tag}.{mode}.onnx"
            compress(src, out, quantize=mode, calib=str(calib) if mode == "int8" else None,
                     measure=False, progress=False)  # fmt: skip
            written = {v.name for v in onnx.load(str(out)).graph.value_info}
            assert written <= had, (tag, mode, written - had)
            assert written or not had or mode == "int8"  # kept where the tensor survived
            ref, got = _run(src, {"x": x[:1]})[0], _run(out, {"x": x[:1]})[0]
            np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())
