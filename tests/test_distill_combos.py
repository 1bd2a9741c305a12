"""--recover distill with every compression, end to end (opt-in: ``pytest -m distill``).

On the digits MLP and a small CNN, for each combination: the file is valid (onnx checker,
onnxruntime runs it), the held-back drop does not get worse (the guard), pruned zeros
stay zero and removed channels stay removed (same tensor shapes as the plain run), and
a model the guard refuses is the plain one, byte for byte. Then the op table's
quantization ops against onnxruntime, the losses per task, --seed, --time-limit,
--progress, hints, recipes and auto's distill rung.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from model_builders import _init, _model, table_model, vin
from test_distill import _cnn

from onnxcomp.methods.distill.forms import find_forms
from onnxcomp.options import CompressOptions
from onnxcomp.pipeline.compress import compress
from onnxcomp.recipe import load_recipe, save_recipe

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.distill

STEPS = 75


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    onnx.save(_cnn(), folder / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((96, 3, 8, 8)).astype(np.float32)
    np.savez(folder / "calib.npz", x=x)
    return folder / "cnn.onnx", folder / "calib.npz"


def _note(result) -> str:
    return next(n for n in result.notes if n.startswith("distill"))


def _drops(note: str) -> tuple[float, float]:
    found = re.search(r"drop ([0-9.e+-]+) -> ([0-9.e+-]+) on", note)
    assert found, note
    return float(found.group(1)), float(found.group(2))


def _valid(path, feed) -> np.ndarray:
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _zeros(path) -> dict[str, np.ndarray]:
    """Each trained weight's zero elements, from the stored forms (unpacked files)."""
    model = ir.load(path)
    forms = find_forms(model)
    get = {k: v.const_value.numpy() for k, v in model.graph.initializers.items()}
    out = {f.codes: get[f.codes] == 0 for f in forms.int8}
    for b in forms.books:
        out[b.codes] = get[b.table][get[b.codes]] == 0
    out.update({f.name: get[f.name] == 0 for f in forms.floats})
    return out


def _shapes(path) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in onnx.load(path).graph.initializer}


COMBOS = {
    "sparsity": {"prune_sparsity": 0.75},
    "channels": {"prune_channels": 0.5},
    "weights": {"quantize": "weights", "prune_sparsity": 0.8},
    "weights-pack": {"quantize": "weights", "prune_sparsity": 0.8, "pack": True},
    "int8": {"quantize": "int8", "prune_sparsity": 0.5, "measure": "off"},
    "int8-7bit": {"quantize": "int8", "weight_range": "reduced", "measure": "off"},
    "int4": {"quantize": "int4", "block_size": 16},
    "codebook": {"quantize": "codebook", "bits": 2, "prune_sparsity": 0.75},
    "codebook-pack": {"quantize": "codebook", "bits": 2, "prune_sparsity": 0.75, "pack": True},
    "channels-int8": {"prune_channels": 0.25, "quantize": "int8", "measure": "off"},
}
NEEDS_CALIB = ("int8", "int4", "codebook")


def _run(model, calib, tmp_path, kwargs, feed):
    data = {"calib": str(calib)} if kwargs.get("quantize") in NEEDS_CALIB else {}
    if "prune_channels" in kwargs:
        data = {"calib": str(calib)}
    plain = compress(model, tmp_path / "plain.onnx", **data, **kwargs)
    result = compress(
        model, tmp_path / "d.onnx", calib=str(calib), recover="distill", distill_steps=STEPS,
        **kwargs,
    )  # fmt: skip
    note = _note(result)
    before, after = _drops(note)
    _valid(tmp_path / "d.onnx", feed)
    if "not kept" in note:  # the guard: a trained candidate no better is not written
        assert (tmp_path / "d.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()
        return plain, result
    assert after <= before, note  # kept: never worse on the held-back samples
    if not kwargs.get("pack"):
        assert _shapes(tmp_path / "d.onnx") == _shapes(tmp_path / "plain.onnx")
    if kwargs.get("prune_sparsity") and not kwargs.get("pack"):
        plain_zeros, mine = _zeros(tmp_path / "plain.onnx"), _zeros(tmp_path / "d.onnx")
        for name, zero in plain_zeros.items():
            if zero.mean() > 0.4:  # a pruned tensor
                assert np.all(mine[name][zero]), name
    return plain, result


@pytest.mark.parametrize("combo", list(COMBOS))
def test_digits_every_combination(digits, tmp_path, combo):
    model, test, calib = digits
    feed = {"pixels": np.load(test)["pixels"][:64]}
    _run(model, calib, tmp_path, COMBOS[combo], feed)


@pytest.mark.parametrize("combo", ["sparsity", "channels-int8", "codebook-pack", "weights"])
def test_cnn_combinations(cnn, tmp_path, combo):
    model, calib = cnn
    feed = {"x": np.load(calib)["x"][:8]}
    _run(model, calib, tmp_path, COMBOS[combo], feed)


def test_recipe_replays_to_the_same_bytes(digits, tmp_path):
    model, _, calib = digits
    options = CompressOptions(
        quantize="codebook", bits=2, prune_sparsity=0.75, pack=True, calib=str(calib),
        recover="distill", distill_steps=STEPS, seed=3,
    )  # fmt: skip
    first = compress(model, tmp_path / "a.onnx", options)
    assert "seed 3" in _note(first)
    save_recipe(options, tmp_path / "r.toml")
    text = (tmp_path / "r.toml").read_text()
    assert 'recover = "distill"' in text and "seed = 3" in text and "distill_steps" in text
    compress(model, tmp_path / "b.onnx", load_recipe(tmp_path / "r.toml"))
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_time_limit_keeps_the_best_so_far_and_progress_is_opt_in(digits, tmp_path, capfd):
    model, _, calib = digits
    kw = {"quantize": "weights", "prune_sparsity": 0.8, "calib": str(calib)}
    result = compress(
        model, tmp_path / "t.onnx", recover="distill", time_limit=1e-6, distill_steps=500, **kw
    )
    assert "stopped by --time-limit at step 1 of 500" in _note(result)
    assert "distill step" not in capfd.readouterr().err  # not a terminal, not asked
    compress(
        model, tmp_path / "p.onnx", recover="distill", distill_steps=50, distill_progress=True,
        **kw,
    )  # fmt: skip
    err = capfd.readouterr().err
    assert "distill step 25/50" in err and "distill step 50/50" in err


def test_quant_ops_run_like_onnxruntime(digits, tmp_path):
    """The student of each stored form, before any step, computes what onnxruntime does."""
    from onnxcomp.methods.distill.optable import unsupported
    from onnxcomp.methods.distill.student import Student

    model, test, calib = digits
    feed = {"pixels": np.load(test)["pixels"][:40]}
    for i, kw in enumerate(
        [
            {"quantize": "int8", "int8_families": ("gemm",)},
            {"quantize": "int8", "int8_families": ("dynamic", "gemm")},
            {"quantize": "int4", "block_size": 16},
            {"quantize": "int4", "block_size": 16, "symmetric": False},
        ]
    ):
        path = tmp_path / f"m{i}.onnx"
        compress(model, path, calib=str(calib), measure="off", **kw)
        graph = ir.load(path)
        assert unsupported(graph.graph) == []
        student = Student(graph, find_forms(graph), keep_zeros=False)
        with torch.no_grad():
            mine = student({"pixels": torch.from_numpy(feed["pixels"])})["probabilities"]
        ref = _valid(path, feed)
        # float32 sums in another order; a rounding flip of an activation code moves an
        # output by one activation step at most
        np.testing.assert_allclose(mine.numpy(), ref, atol=2e-3, rtol=0)
        kinds = {n.op_type for n in graph.graph}
        assert kinds & {"QuantizeLinear", "DynamicQuantizeLinear", "DequantizeLinear"}


def _sequence_model() -> onnx.ModelProto:
    """[N, T, F] -> MatMul -> Softmax over C: per-step class probabilities."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 12)) * 0.5).astype(np.float32)
    nodes = [
        onnx.helper.make_node("MatMul", ["x", "w"], ["logits"]),
        onnx.helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    return _model(nodes, [vin("x", ["N", 6, 16])], [vin("probs", ["N", 6, 12])], [_init("w", w)])


def _embedding_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 64)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((64, 24)) * 0.3).astype(np.float32)
    nodes = [
        onnx.helper.make_node("MatMul", ["x", "w1"], ["h"]),
        onnx.helper.make_node("Relu", ["h"], ["hr"]),
        onnx.helper.make_node("MatMul", ["hr", "w2"], ["emb"]),
    ]
    return _model(
        nodes, [vin("x", ["N", 16])], [vin("emb", ["N", 24])], [_init("w1", w1), _init("w2", w2)]
    )


def test_losses_per_task_end_to_end(tmp_path):
    rng = np.random.default_rng(2)
    onnx.save(_sequence_model(), tmp_path / "seq.onnx")
    np.savez(tmp_path / "seq.npz", x=rng.standard_normal((64, 6, 16)).astype(np.float32))
    kw = {"quantize": "weights", "prune_sparsity": 0.8, "recover": "distill", "distill_steps": 50}
    seq = compress(tmp_path / "seq.onnx", tmp_path / "s.onnx", calib=str(tmp_path / "seq.npz"),
                   **kw)  # fmt: skip
    assert "'probs': KL at T=2" in _note(seq) and "logits" not in _note(seq).split(";")[0]
    onnx.save(_embedding_model(), tmp_path / "emb.onnx")
    np.savez(tmp_path / "emb.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    emb = compress(tmp_path / "emb.onnx", tmp_path / "e.onnx", calib=str(tmp_path / "emb.npz"),
                   task="embed", distill_hint=("hr",), **kw)  # fmt: skip
    note = _note(emb)
    assert "'emb': cosine + batch contrastive" in note and "'hr': hint" in note
    over = compress(tmp_path / "emb.onnx", tmp_path / "o.onnx", calib=str(tmp_path / "emb.npz"),
                    distill_loss=("emb=mse",), **kw)  # fmt: skip
    assert "'emb': per-component normalized MSE" in _note(over)
    for path in ("s.onnx", "e.onnx", "o.onnx"):
        onnx.checker.check_model(onnx.load(tmp_path / path), full_check=True)


def test_unknown_hint_is_a_usage_error(cnn, tmp_path):
    from onnxcomp.errors import OnnxcompError

    model, calib = cnn
    with pytest.raises(OnnxcompError, match="--distill-hint: no tensor named nowhere"):
        compress(model, tmp_path / "h.onnx", quantize="weights", calib=str(calib),
                 recover="distill", distill_hint=("nowhere",))  # fmt: skip
    assert not (tmp_path / "h.onnx").exists()


def test_auto_rung_distills_a_rejected_finalist(digits, tmp_path):
    """A finalist the held-back data rejects (2-bit codebooks over 75% zeros), distilled,
    accepted within the budget; its recipe replays to the same bytes."""
    from onnxcomp.auto import distill_rung
    from onnxcomp.auto import verify as verify_mod
    from onnxcomp.auto.space import build_space
    from onnxcomp.evaluate import Evaluator, JudgeSpec
    from onnxcomp.io.data import input_specs, open_data
    from onnxcomp.io.model_io import load

    model, test, calib = digits
    space = build_space(str(model), objective="size", has_calib=True)
    top = next(i for i, s in enumerate(space.ladder) if s.bits == 2 and s.sparsity == 0.75)
    trial = SimpleNamespace(
        id=7, drop=0.07, bytes=None, deflate_bytes=None, extra={},
        config={layer.name: top for layer in space.layers},
    )  # fmt: skip
    spec = JudgeSpec(metric="accuracy")
    verifier = Evaluator(
        str(model), open_data(str(test), input_specs(load(model)), labels="label"), metric=spec
    )
    plan = verify_mod.plan(verifier, 0.05, 0.9, True, "test split")
    plan.finalists = [verify_mod.Finalist(7, 0.07, verify_drop=0.07, accepted=False)]
    plain = tmp_path / "plain.onnx"
    compress(model, plain, space.to_options(trial.config))
    assert verifier.score(plain).drop > 0.05  # the plain finalist misses the budget

    def options_of(t):
        return distill_rung.distilled(space.to_options(t.config), str(calib), 0)

    out = tmp_path / "out" / "chosen.onnx"
    out.parent.mkdir()
    got = distill_rung.run_rung(
        plan, verifier, {7: trial}, options_of, lambda o, p: compress(model, p, o), out,
        tmp_path / "scratch", seed=0,
    )  # fmt: skip
    assert got is not None, plan.finalists
    chosen, options = got
    assert chosen is trial
    assert plan.finalists[0].distilled and plan.finalists[0].accepted and out.exists()
    save_recipe(options, tmp_path / "r.toml")
    compress(model, tmp_path / "replay.onnx", load_recipe(tmp_path / "r.toml"))
    assert (tmp_path / "replay.onnx").read_bytes() == out.read_bytes()


def test_int4_embedding_rows(tmp_path):
    """GatherBlockQuantized (com.microsoft) int4 rows: the student runs like onnxruntime
    and trains them."""
    from onnxcomp.methods.distill.student import Student

    onnx.save(table_model(), tmp_path / "t.onnx")
    ids = np.random.default_rng(0).integers(0, 1024, (256, 1)).astype(np.int64)
    np.savez(tmp_path / "ids.npz", ids=ids[:, 0])
    result = compress(
        tmp_path / "t.onnx", tmp_path / "d.onnx", quantize="int4", calib=str(tmp_path / "ids.npz"),
        recover="distill", distill_steps=50,
    )  # fmt: skip
    before, after = _drops(_note(result))
    assert after <= before
    model = ir.load(tmp_path / "d.onnx")
    assert any(n.op_type == "GatherBlockQuantized" for n in model.graph)
    forms = find_forms(model)
    assert [f.axis for f in forms.int4] == [1]
    feed = {"ids": ids[:32, 0]}
    with torch.no_grad():
        mine = Student(model, forms, keep_zeros=False)({"ids": torch.from_numpy(feed["ids"])})
    np.testing.assert_allclose(mine["y"].numpy(), _valid(tmp_path / "d.onnx", feed), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_auto_with_distill_end_to_end(digits, tmp_path):
    """``auto --recover distill`` on the digits model: the rung runs exactly when a
    finalist is rejected, and a distilled winner's recipe replays to its bytes."""
    from onnxcomp.auto import auto

    model, test, calib = digits
    result = auto(
        model, tmp_path / "out.onnx", calib=str(calib), data=str(test), labels="label",
        max_drop=0.01, recover="distill", max_trials=12, workers=1, allow_small_data=True,
        log=lambda line: None,
    )  # fmt: skip
    finalists = result.verification.finalists
    distilled = [f for f in finalists if f.distilled]
    rejected = [f for f in finalists if not f.distilled and not f.accepted]
    assert len(distilled) == (1 if rejected else 0)
    if distilled and distilled[0].accepted:
        assert result.chosen.extra.get("distilled")
        assert 'recover = "distill"' in (tmp_path / "out.onnx.recipe.toml").read_text()
        compress(model, tmp_path / "replay.onnx", load_recipe(tmp_path / "out.onnx.recipe.toml"))
        assert (tmp_path / "replay.onnx").read_bytes() == (tmp_path / "out.onnx").read_bytes()


def test_losses_are_zero_at_the_teacher_and_per_position():
    """Each loss is 0 when the student equals the teacher; KL on [N, T, C] is the mean
    over samples and steps of the per-step KL (so a long sequence does not weigh more)."""
    from onnxcomp.methods.distill.targets import make_target
    from onnxcomp.methods.distill.train import loss_of

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 6, 5)).astype(np.float32)
    idx = np.arange(4)
    kl = make_target("y", "kl", logits.copy())
    assert float(loss_of(kl, {"y": torch.from_numpy(logits)}, idx)) == pytest.approx(0, abs=1e-6)
    other = rng.standard_normal((4, 6, 5)).astype(np.float32)
    t, s = torch.from_numpy(logits) / 2, torch.from_numpy(other) / 2
    pt = torch.softmax(t, -1)
    per_step = (pt * (torch.log_softmax(t, -1) - torch.log_softmax(s, -1))).sum(-1)
    got = float(loss_of(kl, {"y": torch.from_numpy(other)}, idx))
    assert got == pytest.approx(float(per_step.mean()) * 4, rel=1e-5)
    emb = rng.standard_normal((4, 8)).astype(np.float32)
    cos = make_target("e", "cosine", emb)
    same = float(loss_of(cos, {"e": torch.from_numpy(emb)}, idx))
    shuffled = float(loss_of(cos, {"e": torch.from_numpy(emb[::-1].copy())}, idx))
    assert same < shuffled  # the contrastive term ranks each sample's own vector first
    mse = make_target("r", "mse", emb)
    assert float(loss_of(mse, {"r": torch.from_numpy(emb)}, idx)) == 0.0


def test_ctc_steps_weigh_by_the_teachers_emitting():
    """On a CTC sequence each step's KL weighs 1 - p_teacher(blank) (+ a floor): a step the
    teacher surely leaves blank barely counts, one where it emits counts fully."""
    from onnxcomp.methods.distill.targets import make_target
    from onnxcomp.methods.distill.train import EMIT_FLOOR, loss_of

    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 4, 5)).astype(np.float32)
    logits[:, :2, 0] = 30.0  # steps 0-1: blank for sure; steps 2-3: character 3 for sure
    logits[:, 2:, 3] = 30.0
    idx = np.arange(2)
    kl = make_target("y", "kl", logits.copy())
    kl.blank = 0
    assert float(loss_of(kl, {"y": torch.from_numpy(logits)}, idx)) == pytest.approx(0, abs=1e-6)
    t = torch.from_numpy(logits)
    other = torch.from_numpy(rng.standard_normal((2, 4, 5)).astype(np.float32))
    per_step = (torch.softmax(t / 2, -1) * (torch.log_softmax(t / 2, -1)
                - torch.log_softmax(other / 2, -1))).sum(-1)  # fmt: skip
    w = 1 - torch.softmax(t, -1)[..., 0] + EMIT_FLOOR
    assert w[:, :2].max() < 2 * EMIT_FLOOR and w[:, 2:].min() > 1.0
    got = float(loss_of(kl, {"y": other}, idx))
    assert got == pytest.approx(float((per_step * w).sum() / w.sum()) * 4, rel=1e-5)
    assert "steps weighted by the teacher's emitting (blank 0)" in kl.describe()


def test_a_time_major_output_trains_as_its_batch_major_twin(tmp_path):
    """ddddocr's CTC output is [T, N, C]: found by the axis that grows from one sample to
    two, stored and trained samples first. The same model with the output batch-major
    trains to the same weights (the losses are the same numbers in another order)."""
    rng = np.random.default_rng(3)
    twin = _sequence_model()
    onnx.save(twin, tmp_path / "seq.onnx")
    tm = onnx.ModelProto()
    tm.CopyFrom(twin)
    tm.graph.node.append(onnx.helper.make_node("Transpose", ["probs"], ["tprobs"], perm=[1, 0, 2]))
    del tm.graph.output[:]
    tm.graph.output.append(vin("tprobs", [6, "N", 12]))
    onnx.save(tm, tmp_path / "tm.onnx")
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((64, 6, 16)).astype(np.float32))
    kw = {"quantize": "weights", "prune_sparsity": 0.8, "recover": "distill", "distill_steps": 50}
    a = compress(tmp_path / "seq.onnx", tmp_path / "a.onnx", calib=str(tmp_path / "d.npz"), **kw)
    b = compress(tmp_path / "tm.onnx", tmp_path / "b.onnx", calib=str(tmp_path / "d.npz"), **kw)
    assert "'tprobs': KL at T=2" in _note(b)
    wa, wb = (ort.InferenceSession(str(tmp_path / p)) for p in ("a.onnx", "b.onnx"))
    x = rng.standard_normal((5, 6, 16)).astype(np.float32)
    pa, pb = wa.run(None, {"x": x})[0], wb.run(None, {"x": x})[0]
    assert pb.shape == (6, 5, 12)
    np.testing.assert_allclose(np.swapaxes(pb, 0, 1), pa, atol=1e-5)
    assert _note(a).split("'probs'")[1] == _note(b).split("'tprobs'")[1]
