"""The blocks --recover blockwise rebuilds, found without torch: each weighted layer with
its weight decoding, cut where the compressed graph meets a value the original computes
by name; what cannot be cut is left with its reason. And the option's rules."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx_ir as ir
import pytest
from model_builders import transformer, write_data

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph import opaque_types
from onnxcomp.methods.distill.blocks import find_blocks
from onnxcomp.methods.distill.blockwise import anchors
from onnxcomp.options import AutoOptions, CompressOptions
from onnxcomp.pipeline.compress import compress_model


def _pair(tmp_path, **kwargs) -> tuple[ir.Model, ir.Model]:
    """(the original, the compressed model read back from its proto)."""
    calib = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, ids=rng.integers(0, 64, (16, 8)).astype(np.int64))
    int8 = kwargs["quantize"] == "int8"  # measure off: the int8 families do not depend on timing
    options = CompressOptions(
        calib=str(calib) if int8 else None, measure="off" if int8 else True, **kwargs
    )
    compressed, _ = compress_model(ir.from_proto(transformer()), options)
    return ir.from_proto(transformer()), ir.from_proto(opaque_types.to_proto(compressed))


def test_int8_blocks_take_the_activation_quantizer(tmp_path):
    original, compressed = _pair(tmp_path, quantize="int8")
    blocks = {b.output: b for b in find_blocks(compressed, anchors(original))}
    names = {v.name for n in original.graph for v in n.outputs}
    assert all(b.output in names and not b.skip for b in blocks.values())
    q = blocks["l0_q_mm"]  # Q/DQ of its input, the weight's DequantizeLinear, the MatMul
    assert [n.op_type for n in q.nodes].count("QuantizeLinear") == 1
    assert q.node.op_type == "MatMul" and q.nodes[-1] is q.node
    assert q.inputs == ["h0"]  # the original's value the quantizer reads
    assert {"l0_q_w_quantized", "l0_q_w_scale"} <= set(q.leaves)
    # A leaf read outside the block (shared by q, k and v) is never trained here.
    for b in blocks.values():
        inside = set(b.nodes)
        for leaf in b.leaves:
            uses = compressed.graph.initializers[leaf].uses()
            assert all(u.node in inside for u in uses)


def test_weight_only_blocks_grow_through_the_activation(tmp_path):
    original, compressed = _pair(tmp_path, quantize="weights")
    blocks = {b.node.name: b for b in find_blocks(compressed, anchors(original))}
    f1 = next(b for b in blocks.values() if "l0_f1" in (b.node.name or ""))
    assert f1.output == "l0_f1r"  # MatMul -> Add bias -> Relu, all named in the original
    assert [n.op_type for n in f1.nodes][-1] == "Relu"


def test_blocks_without_a_named_output_are_left_with_their_reason(tmp_path):
    _, compressed = _pair(tmp_path, quantize="weights")
    blocks = find_blocks(compressed, {"ids"})  # the original names nothing inside
    assert blocks and all("reaches no value of the original" in b.skip for b in blocks)


def test_options(monkeypatch, tmp_path):
    write_data(tmp_path / "calib.npz")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(OnnxcompError, match=r"blockwise needs PyTorch: pip install"):
        CompressOptions(
            quantize="weights", recover="blockwise", calib=str(tmp_path / "calib.npz")
        ).validate()
    with pytest.raises(OnnxcompError, match="auto --recover blockwise is not available"):
        AutoOptions(
            recover="blockwise", calib=str(tmp_path / "calib.npz"), max_drop=0.01
        ).validate()


def test_samples_of_different_shapes_are_padded_or_the_most_common_used():
    """blockwise and distill both stack their samples this way (distill stopped on the
    PaddleOCR recognizer's lines of different widths with a traceback, then trained on
    the 26 of 48 lines of the most common width)."""
    from types import SimpleNamespace

    from onnxcomp.methods.distill.samples import collect as _stack

    rows = [np.full((1, n), n, np.int64) for n in (100, 128, 128, 70, 128)]
    batches = [SimpleNamespace(feed={"ids": r, "other": r}, size=1) for r in rows]
    stacked, said = _stack(batches, ["ids"])  # type: ignore[arg-type]
    assert stacked["ids"].shape == (5, 128)
    assert said == "5 calibration batches (3 shapes, zero-padded)"
    assert (stacked["ids"][0, :100] == 100).all() and (stacked["ids"][0, 100:] == 0).all()
    assert (stacked["ids"][3, :70] == 70).all() and (stacked["ids"][3, 70:] == 0).all()
    # padding 12 tokens to 128 would more than double the data: the short ones padded to
    # 12 instead (4 rows, 48 padded for 38 own), more than the 3 of length 128
    rows = [np.zeros((1, n), np.int64) for n in (12, 128, 128, 7, 128, 9, 10)]
    batches = [SimpleNamespace(feed={"ids": r}, size=1) for r in rows]
    common, said = _stack(batches[:5], ["ids"])  # type: ignore[arg-type]
    assert common["ids"].shape == (5, 128)  # 640 padded for 403 tokens: 1.6x
    short, said = _stack(batches, ["ids"])  # type: ignore[arg-type]
    assert short["ids"].shape == (4, 12)
    assert said == "4 of 7 calibration batches (4 shapes, zero-padded)"
    # a tie in rows goes to the smaller padded size: two lines 2 x 120, two 6 x 30
    rows = [np.ones((1, h, w), np.float32) for h, w in ((2, 120), (6, 30), (2, 120), (6, 30))]
    batches2 = [SimpleNamespace(feed={"x": r}, size=1) for r in rows]
    small, said = _stack(batches2, ["x"])  # type: ignore[arg-type]
    assert (
        small["x"].shape == (2, 6, 30) and said == "2 of 4 calibration batches (those of one shape)"
    )
    # images whose heights and widths differ pad to the largest of both
    imgs = [np.ones((1, 3, h, w), np.float32) for h, w in ((32, 40), (40, 32), (36, 36))]
    batches3 = [SimpleNamespace(feed={"x": r}, size=1) for r in imgs]
    boxed, said = _stack(batches3, ["x"])  # type: ignore[arg-type]
    assert boxed["x"].shape == (3, 3, 40, 40) and boxed["x"].sum() == sum(r.sum() for r in imgs)
    same, said = _stack(batches[1:3], ["ids"])  # type: ignore[arg-type]
    assert same["ids"].shape == (2, 128) and said == ""
    with pytest.raises(OnnxcompError, match="holds no sample"):
        _stack([], ["ids"])  # type: ignore[arg-type]
