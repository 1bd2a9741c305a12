"""``--target-size``: codebook bits lowered where the task loses least, until the file fits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from model_builders import ort_session, vin
from onnx import helper, numpy_helper

from onnxcomp import compress
from onnxcomp.cli import main
from onnxcomp.graph.weights import Weight
from onnxcomp.methods.codebook.budget import MIN_BITS, plan_bits, stored_bytes
from onnxcomp.numerics.codebook import fit_codebook

ROWS = 256


def loud_quiet_model() -> onnx.ModelProto:
    """Two same-shaped, same-distribution weights: ``loud`` reaches the scores as it is,
    ``quiet`` scaled by 1e-3, so a bit off ``quiet`` costs the task nothing while its
    weight error is the same as ``loud``'s."""
    rng = np.random.default_rng(0)
    loud = rng.standard_normal((64, ROWS)).astype(np.float32)
    quiet = rng.standard_normal((64, ROWS)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "loud"], ["a"], name="loud_mm"),
            helper.make_node("MatMul", ["x", "quiet"], ["b"], name="quiet_mm"),
            helper.make_node("Mul", ["b", "damp"], ["c"], name="damp_mul"),
            helper.make_node("Add", ["a", "c"], ["y"], name="sum"),
        ],
        "g",
        [vin("x", ["N", 64])],
        [vin("y", ["N", ROWS])],
        [
            numpy_helper.from_array(loud, "loud"),
            numpy_helper.from_array(quiet, "quiet"),
            numpy_helper.from_array(np.array(1e-3, np.float32), "damp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def loud_quiet(save_model, tmp_path):
    src = save_model(loud_quiet_model())
    data = tmp_path / "calib.npz"
    x = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    np.savez(data, x=x)
    plain = tmp_path / "plain.onnx"
    compress(src, plain, quantize="codebook", bits=4, pack=True, calib=data)
    # one bit off one weight saves ROWS * 64 / 8 = 2 KB: ask for 1 KB less than 4 bits give
    target = (plain.stat().st_size - 1024) / src.stat().st_size
    return src, data, target


def test_the_task_picks_the_weight_to_lower_and_the_file_fits(loud_quiet, tmp_path):
    src, data, target = loud_quiet
    out = tmp_path / "o.onnx"
    r = compress(src, out, quantize="codebook", bits=4, pack=True, calib=data, target_size=target)
    ks = {q.name: q.k for q in r.quantized}
    assert ks == {"loud": 16, "quiet": 8}  # one step was enough, and it was the quiet one
    assert out.stat().st_size <= target * src.stat().st_size
    note = next(n for n in r.notes if n.startswith("--target-size"))
    assert "quiet (3-bit)" in note and "calibration data" in note and "(fits)" in note
    onnx.checker.check_model(onnx.load(out), full_check=True)
    feed = {"x": np.ones((2, 64), np.float32)}
    ref, got = ort_session(src).run(None, feed)[0], ort_session(out).run(None, feed)[0]
    # 4-bit loud (k-means on a normal: ~10% relative error) dominates what changed
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.2


def test_same_options_same_bytes_and_the_cli_agrees(loud_quiet, tmp_path):
    src, data, target = loud_quiet
    outs = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    compress(src, outs[0], quantize="codebook", bits=4, pack=True, calib=data, target_size=target)
    args = ["--quantize", "codebook", "--pack", "--calib", str(data), "--target-size", str(target)]
    assert main(["compress", str(src), "-o", str(outs[1]), *args]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_without_data_the_weight_error_decides_and_says_so(loud_quiet, tmp_path):
    src, _, target = loud_quiet
    opts = dict(quantize="codebook", bits=4, pack=True, target_size=target)
    r = compress(src, tmp_path / "o.onnx", **opts)
    note = next(n for n in r.notes if n.startswith("--target-size"))
    assert "relative weight error" in note
    assert sorted(q.k for q in r.quantized) == [8, 16]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quantize", "codebook", "--target-size", "0.1"], "add --quantize codebook --pack"),
        (["--quantize", "weights", "--pack", "--target-size", "0.1"], "--quantize codebook --pack"),
        (["--quantize", "codebook", "--pack", "--target-size", "1.5"], "must be in (0, 1)"),
    ],
)
def test_bad_target_exits_2(args, message, save_model, tmp_path, capsys):
    src = save_model(loud_quiet_model())
    assert main(["compress", str(src), "-o", str(tmp_path / "o.onnx"), *args]) == 2
    assert message in capsys.readouterr().err


class _Costs:
    """Trials whose task cost is a fixed number per weight and bit (what a session would say)."""

    label = "fake gauge"

    def __init__(self, per_bit: dict[str, float]) -> None:
        self.per_bit, self.calls = per_bit, 0

    def cost(self, name: str, trial: np.ndarray, base: np.ndarray) -> float:
        self.calls += 1
        bits = int(np.unique(trial).size).bit_length() - 1
        return self.per_bit[name] * (4 - bits)  # 1 cost unit per bit below 4


def _weights(shapes: dict[str, tuple[int, int]]) -> tuple[list[Weight], dict[str, np.ndarray]]:
    import onnx_ir as ir

    graph = ir.Graph([], [], nodes=[])
    rng = np.random.default_rng(0)
    ws, arrays = [], {}
    for name, shape in shapes.items():
        arrays[name] = rng.standard_normal(shape).astype(np.float32)
        value = ir.Value(name=name, const_value=ir.tensor(arrays[name]))
        ws.append(Weight(value, graph))
    return ws, arrays


def test_the_plan_takes_the_cheapest_bytes_still_needed_and_stops_at_two_bits():
    ws, arrays = _weights({"big": (256, 256), "small_a": (64, 256), "small_b": (64, 256)})
    books = {n: fit_codebook(a, 4) for n, a in arrays.items()}

    def fit(w: Weight, a: np.ndarray, b: int):
        return fit_codebook(a, b)

    estimate = sum(stored_bytes(b) for b in books.values())
    small_step = stored_bytes(books["small_a"]) - stored_bytes(fit_codebook(arrays["small_a"], 3))
    bits = dict.fromkeys(books, 4)
    free = set(books)
    # needing less than one small step: the small weight of lower cost, not the big one
    # whose cost per byte looks lower only because it saves bytes nobody needs
    trials = _Costs({"big": 1.0, "small_a": 0.5, "small_b": 0.4})
    need = small_step // 2
    plan = plan_bits(ws, books, arrays, free, bits, fit,
                     estimate=estimate, target=estimate - need, trials=trials)  # fmt: skip
    assert plan.bits == {"small_b": 3} and plan.estimate <= plan.target
    # an unreachable target takes every free weight down to MIN_BITS, and no further
    plan = plan_bits(ws, books, arrays, free - {"big"}, bits, fit,
                     estimate=estimate, target=0, trials=None)  # fmt: skip
    assert plan.bits == {"small_a": MIN_BITS, "small_b": MIN_BITS}
    assert plan.estimate > plan.target and "big" not in plan.bits


def test_an_unreachable_target_says_so_and_still_writes_the_smallest_plan(loud_quiet, tmp_path):
    src, data, _ = loud_quiet
    out = tmp_path / "o.onnx"
    opts = dict(quantize="codebook", bits=4, pack=True, calib=data, target_size=0.01)
    r = compress(src, out, **opts)
    assert sorted(q.k for q in r.quantized) == [4, 4]  # both weights down to MIN_BITS
    note = next(n for n in r.notes if n.startswith("--target-size"))
    assert "still over" in note
    warning = next(n for n in r.notes if n.startswith("warning: the file is"))
    assert "above --target-size 0.01" in warning
    assert out.stat().st_size > 0.01 * src.stat().st_size
