"""What bounds distillation's memory, as behaviour (memory itself is measured in
benchmarks/distill.py): a forward asked to keep some values returns those and frees the
rest, branches still reading what they need; a step run in chunks has the whole
minibatch's gradient; the chunk follows the coupling of the samples; straight-through
rounding passes gradients exactly where clamp would.

Tolerances: a chunked step sums per-sample gradients in another order than one batch
does; float32 sums of 10 samples' terms differ by a few units in the last place of the
terms' magnitude, which is the gradients' own (a scale's gradient cancels to ~1e-8 out
of terms of that size): rtol 1e-5, atol 1e-6 of the largest gradient of any parameter.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from model_builders import _init, _model, conv_net, vin
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")

from onnxcomp.methods.distill import train as training  # noqa: E402
from onnxcomp.methods.distill.forms import find_forms  # noqa: E402
from onnxcomp.methods.distill.ops.common import tensor_of  # noqa: E402
from onnxcomp.methods.distill.optable import run_graph  # noqa: E402
from onnxcomp.methods.distill.student import Student  # noqa: E402
from onnxcomp.methods.distill.targets import choose  # noqa: E402
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass  # noqa: E402
from onnxcomp.options import CompressOptions  # noqa: E402
from onnxcomp.pipeline.compress import compress_model  # noqa: E402

pytestmark = pytest.mark.distill


def _env(model: ir.Model, feed: dict[str, np.ndarray]) -> dict:
    env = {n: tensor_of(v.const_value.numpy()) for n, v in model.graph.initializers.items()}
    return {**env, **{k: torch.from_numpy(v) for k, v in feed.items()}}


def test_keep_returns_the_kept_values_and_drops_the_rest():
    model = ir.from_proto(conv_net())
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    every = run_graph(model.graph, _env(model, {"x": x}))
    kept = run_graph(model.graph, _env(model, {"x": x}), keep={"logits", "r1"})
    assert torch.equal(kept["logits"], every["logits"])
    assert torch.equal(kept["r1"], every["r1"])
    assert {"c1", "ct", "gap", "flat"} <= set(every)
    assert not {"c1", "ct", "gap", "flat"} & set(kept)


def _branch_reads_computed_value() -> ir.Model:
    """Relu's output is read only inside the If's branches (by outer-scope name)."""
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)

    def branch(name: str):
        return helper.make_graph(
            [helper.make_node("MatMul", ["r", "w"], [f"{name}_y"])],
            name, [], [vin(f"{name}_y", ["N", 8])],
        )  # fmt: skip

    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node(
            "If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else")
        ),
    ]
    inputs = [vin("x", ["N", 8]), vin("cond", [], TensorProto.BOOL)]
    return ir.from_proto(_model(nodes, inputs, [vin("y", ["N", 8])], [_init("w", w)]))


def test_keep_holds_values_a_branch_reads_until_the_if_runs():
    model = _branch_reads_computed_value()
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    feed = {"x": x, "cond": np.array(True)}
    out = run_graph(model.graph, _env(model, feed), keep={"y"})
    w = model.graph.initializers["w"].const_value.numpy()
    np.testing.assert_allclose(out["y"].numpy(), np.maximum(x, 0) @ w, rtol=1e-5, atol=1e-6)
    assert "r" not in out


def _student_and_targets(n: int, codebook: bool = False):
    """int8 weights (rounded straight-through) or 2-bit codebooks (a straight-through
    term added to the decoded weights)."""
    model = ir.from_proto(conv_net())
    if codebook:
        model, _ = compress_model(model, CompressOptions(quantize="codebook", bits=2))
    else:
        QuantizeWeightsPass()(model)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((n, 3, 8, 8)).astype(np.float32)}
    teacher = {"logits": rng.standard_normal((n, 10)).astype(np.float32)}
    student = Student(model, find_forms(model), keep_zeros=False)
    return student, feeds, choose(teacher, "classify", {}, {})


def _grads(student: Student) -> list[torch.Tensor]:
    return [p.grad.clone() for p in student.parameters() if p.grad is not None]


@pytest.mark.parametrize("codebook", [False, True], ids=["int8", "codebook"])
@pytest.mark.parametrize("chunk", [1, 3, 10])
def test_a_chunked_step_has_the_whole_minibatch_gradient(chunk, codebook):
    student, feeds, targets = _student_and_targets(16, codebook)
    idx = np.arange(1, 11)  # 10 samples: chunks of 3 leave a ragged last one
    student.zero_grad()
    loss = training._batch_loss(student, feeds, targets, idx)  # one forward, one backward
    loss.backward()
    whole, expected = float(loss.detach()), _grads(student)
    student.zero_grad()
    chunked = training._step(student, feeds, targets, idx, chunk)
    got = _grads(student)
    assert chunked == pytest.approx(whole, rel=1e-5)
    assert len(got) == len(expected) > 0
    scale = max(float(e.abs().max()) for e in expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * scale)


def test_chunks_follow_the_coupling_of_the_samples(monkeypatch):
    student, feeds, targets = _student_and_targets(8)
    plan = training.Plan(steps=1, lr=1e-3, batch=8)
    assert training.chunk_size(student, feeds, targets, plan) == 8  # tiny: one chunk
    monkeypatch.setattr(training, "ACTIVATION_BYTES", 1)
    assert training.chunk_size(student, feeds, targets, plan) == 1
    fixed = training.Plan(steps=1, lr=1e-3, batch=8, fixed=4)  # a fixed batch dimension
    assert training.chunk_size(student, feeds, targets, fixed) == 4  # whole runs
    embed = choose({"logits": np.ones((8, 10), np.float32)}, "embed", {}, {})  # contrastive
    assert training.chunk_size(student, feeds, embed, plan) == 8


def test_straight_through_passes_where_clamp_would():
    from onnxcomp.methods.distill.ops.quant import fake_round

    zero, weights = torch.tensor(3.0), torch.arange(1.0, 6.0)
    v = torch.tensor([-3.0, -3.25, 252.0, 252.25, 10.5], requires_grad=True)  # + 3: 0 .. 255
    q = fake_round(v, zero, 0, 255)
    (q * weights).sum().backward()
    assert q.tolist() == [0.0, 0.0, 255.0, 255.0, 13.0]  # 10.5 rounds half to even
    ref = v.detach().clone().requires_grad_()
    (torch.clamp(ref + zero, 0, 255) * weights).sum().backward()
    assert v.grad.tolist() == ref.grad.tolist() == [1.0, 0.0, 3.0, 0.0, 5.0]


def test_runs_of_a_fixed_batch_join_into_one_minibatch():
    """A model of a fixed batch runs a minibatch ``fixed`` samples at a time; the joined
    values give the loss and gradients of one run over all (the contrastive term couples
    the samples, so a wrong join would show). Tolerance as above."""
    student, feeds, _ = _student_and_targets(16)
    emb = choose({"logits": np.random.default_rng(4).standard_normal((16, 10), np.float32)},
                 "embed", {}, {})  # fmt: skip
    idx = np.arange(2, 10)
    student.zero_grad()
    whole = training._batch_loss(student, feeds, emb, idx)
    whole.backward()
    expected = _grads(student)
    student.zero_grad()
    runs = training._batch_loss(student, feeds, emb, idx, fixed=2)
    runs.backward()
    assert float(runs.detach()) == pytest.approx(float(whole.detach()), rel=1e-5)
    scale = max(float(e.abs().max()) for e in expected)
    for g, e in zip(_grads(student), expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * scale)


def test_token_states_leave_padding_free():
    """The embedding loss on token states reads only the real tokens: any padding state
    of the student gives the same loss, which is the loss of the real tokens alone
    (equal lengths, so the means pool the same positions); matching leaves only the
    contrastive term's floor."""
    rng = np.random.default_rng(5)
    teacher = torch.from_numpy(rng.standard_normal((4, 6, 8)).astype(np.float32))
    student = teacher + 0.3 * torch.from_numpy(rng.standard_normal((4, 6, 8)).astype(np.float32))
    weights = torch.zeros(4, 6)
    weights[:, :3] = 1
    loss = training._tokens(student, teacher, weights)
    moved = student.clone()
    moved[:, 3:] = 100.0
    assert float(training._tokens(moved, teacher, weights)) == pytest.approx(float(loss), 1e-6)
    alone = training._tokens(student[:, :3], teacher[:, :3], torch.ones(4, 3))
    assert float(alone) == pytest.approx(float(loss), rel=1e-6)
    # a float32 cosine of a vector with itself is 1 to a few units of 1.2e-7: abs 1e-6
    floor = training._cosine(teacher[:, :3].mean(1), teacher[:, :3].mean(1))  # contrastive
    assert float(training._tokens(teacher, teacher, weights)) == pytest.approx(
        float(floor), abs=1e-6
    )
