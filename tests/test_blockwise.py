"""--recover blockwise end to end (opt-in: ``pytest -m distill``, needs .[distill]).

Against --recover gptq/sparsegpt on the same compression of the digits MLP and of a
small transformer: the task metric (the MLP's test accuracy) or the logits' error
against the original on data it did not see; the file keeps its graph and stores exactly
the codes the rebuilt blocks computed with; a block the op table cannot run is left and
named."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from model_builders import transformer

from onnxcomp.pipeline.compress import compress

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.distill


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    onnx.save(transformer(), folder / "t.onnx")
    rng = np.random.default_rng(0)
    np.savez(folder / "calib.npz", ids=rng.integers(0, 64, (96, 8)).astype(np.int64))
    test = {"ids": np.random.default_rng(1).integers(0, 64, (64, 8)).astype(np.int64)}
    return folder / "t.onnx", folder / "calib.npz", test


def _run(path, feed) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _accuracy(path, test) -> float:
    data = np.load(test)
    return float((_run(path, {"pixels": data["pixels"]}).argmax(1) == data["label"]).mean())


def _note(result) -> str:
    return next(n for n in result.notes if n.startswith("blockwise"))


def _same_graph(a, b) -> None:
    """Only initializer values differ: nodes, names, dtypes and shapes are the same."""
    ma, mb = ir.load(a), ir.load(b)
    nodes = lambda m: [(n.op_type, [v.name if v else None for v in n.inputs]) for n in m.graph]  # noqa: E731
    inits = lambda m: {k: (v.dtype, v.shape) for k, v in m.graph.initializers.items()}  # noqa: E731
    assert nodes(ma) == nodes(mb) and inits(ma) == inits(mb)


def test_digits_codebook_over_sparsity_beats_sparsegpt(digits, tmp_path):
    model, test, calib = digits
    kwargs = {"prune_sparsity": 0.75, "quantize": "codebook", "bits": 2, "calib": str(calib)}
    compress(model, tmp_path / "plain.onnx", **kwargs)
    compress(model, tmp_path / "sgpt.onnx", recover="sparsegpt", **kwargs)
    result = compress(model, tmp_path / "bw.onnx", recover="blockwise", **kwargs)
    assert "kept" in _note(result) and "not kept" not in _note(result)
    _same_graph(tmp_path / "plain.onnx", tmp_path / "bw.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "bw.onnx"), full_check=True)
    fp32, plain = _accuracy(model, test), _accuracy(tmp_path / "plain.onnx", test)
    blockwise, sgpt = _accuracy(tmp_path / "bw.onnx", test), _accuracy(tmp_path / "sgpt.onnx", test)
    assert blockwise > max(plain, sgpt), (fp32, plain, sgpt, blockwise)
    # Pruned weights stay pruned: the codes of zero are as many as before.
    for name in ("fc0.weight_codes", "fc1.weight_codes"):
        before, after = (
            ir.load(p).graph.initializers[name].const_value.numpy()
            for p in (tmp_path / "plain.onnx", tmp_path / "bw.onnx")
        )
        assert after.shape == before.shape


@pytest.mark.parametrize(
    "kwargs", [{"quantize": "int4", "awq": False}, {"quantize": "weights"}], ids=["int4", "int8"]
)
def test_transformer_blocks_beat_gptq(tiny, tmp_path, kwargs):
    model, calib, test = tiny
    reference = _run(model, test)
    errors = {}
    for recover in (None, "gptq", "blockwise"):
        out = tmp_path / f"{recover}.onnx"
        data = {"calib": str(calib)} if recover or kwargs["quantize"] == "int4" else {}
        result = compress(model, out, recover=recover, **data, **kwargs)
        errors[recover] = float(np.mean((_run(out, test) - reference) ** 2))
    assert "kept" in _note(result)
    _same_graph(tmp_path / "None.onnx", tmp_path / "blockwise.onnx")
    assert errors["blockwise"] < min(errors[None], errors["gptq"]), errors


def test_hard_codes_are_the_stored_codes(tiny):
    """What a rebuilt block computes with is what the file stores, bit for bit."""
    from onnxcomp.methods.distill.adaround import optimize, run_nodes
    from onnxcomp.methods.distill.block_params import _tensor, build_params, original_weights
    from onnxcomp.methods.distill.blocks import find_blocks
    from onnxcomp.methods.distill.blockwise import _capture, anchors
    from onnxcomp.methods.distill.forms import find_forms
    from onnxcomp.options import CompressOptions
    from onnxcomp.pipeline.compress import compress_model

    model, calib, _ = tiny
    teacher = ir.load(model)
    student, _ = compress_model(ir.load(model), CompressOptions(quantize="int4", awq=False))
    feeds = {"ids": np.load(calib)["ids"]}
    checked = 0
    for block in find_blocks(student, anchors(teacher))[:3]:
        got = _capture(teacher, [*block.inputs, block.output], feeds, 32)
        inputs = {k: got[k] for k in block.inputs}
        params, plain, _ = build_params(
            student.graph, block, find_forms(student), original_weights(teacher, block.output),
            keep_zeros=False, reduced=False,
        )  # fmt: skip
        assert params.codes
        optimize(params, inputs, got[block.output], 1.0, steps=20, lr=1e-3, batch=32, seed=0)
        stored = params.stored()
        with torch.no_grad():
            mine = params.forward({k: torch.from_numpy(v) for k, v in inputs.items()}, hard=True)
            env = {**plain.fixed, **{k: torch.from_numpy(v) for k, v in inputs.items()}}
            for name, array in stored.items():
                env[name] = _tensor(array)
            theirs = run_nodes(plain.program, env)[block.output]
        assert torch.equal(mine, theirs)
        checked += 1
    assert checked == 3


def test_a_block_the_op_table_cannot_run_is_named(digits, tmp_path, monkeypatch):
    from onnxcomp.methods.distill import adaround

    monkeypatch.setitem(adaround.OVERRIDES, "Gemm", None)
    model, _, calib = digits
    result = compress(
        model, tmp_path / "o.onnx", calib=str(calib), quantize="weights", recover="blockwise"
    )
    note = _note(result)
    assert "0 of 0 blocks rebuilt" in note and "the op table cannot run Gemm" in note
    assert "not kept" in note
