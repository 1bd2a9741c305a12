"""auto judges its finalists on held-back data, by a bound; the split behind it; check's gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_builders import robust_fragile_model, write_data

from onnxcomp import check
from onnxcomp.auto import auto
from onnxcomp.auto.split import split_data
from onnxcomp.cli import main
from onnxcomp.errors import OnnxcompError
from onnxcomp.io.data import InputSpec, open_data

SPECS = [InputSpec("x", np.dtype(np.float32), ("N", 4))]


def _rows(folder: str, labels: str | None = None):
    xs, ys = [], []
    for b in open_data(folder, SPECS, labels=labels):
        xs.append(b.feed["x"])
        if b.labels is not None:
            ys.append(b.labels)
    return np.concatenate(xs), (np.concatenate(ys) if ys else None)


def test_split_is_disjoint_complete_stratified_and_seeded(tmp_path):
    x = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    y = np.repeat(np.arange(3), [150, 90, 60])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = split_data(str(tmp_path / "d.npz"), SPECS, tmp_path / "a", labels="y", seed=5)
    assert (s.search_samples, s.verify_samples, s.stratified) == (200, 100, True)
    xs, ys = _rows(s.search, "y")
    xv, yv = _rows(s.verify, "y")
    assert np.bincount(yv).tolist() == [50, 30, 20]  # a third of each class
    rows = np.concatenate([xs, xv])[:, 0]
    assert sorted(rows.tolist()) == x[:, 0].tolist()  # every sample once, labels kept
    assert np.array_equal(np.concatenate([ys, yv]), y[(rows // 4).astype(int)])
    again = split_data(str(tmp_path / "d.npz"), SPECS, tmp_path / "b", labels="y", seed=5)
    assert np.array_equal(_rows(again.verify)[0], xv)
    other = split_data(str(tmp_path / "d.npz"), SPECS, tmp_path / "c", labels="y", seed=6)
    assert not np.array_equal(_rows(other.verify)[0], xv)


def test_split_refuses_a_single_sample(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 4), np.float32))
    with pytest.raises(OnnxcompError, match="cannot hold back"):
        split_data(str(tmp_path / "d.npz"), SPECS, tmp_path / "a")


@pytest.fixture
def setup(save_model, tmp_path):
    model = save_model(robust_fragile_model())
    data = tmp_path / "data.npz"
    write_data(data, n=300)
    return model, data


def test_too_little_data_is_refused_up_front_with_the_count_needed(setup, tmp_path, capsys):
    model, data = setup
    args = ["auto", str(model), "-o", str(tmp_path / "o.onnx"), "--data", str(data),
            "--max-drop", "0.01", "--max-trials", "4", "--workers", "1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    # 100 held back; a 1% agreement budget at 95% needs 299: (1 - 0.01) ** 299 < 0.05
    assert "cannot resolve" in err and "top-1 agreement" in err and "299 would" in err
    assert "--allow-small-data" in err
    assert not (tmp_path / "o.onnx.report.json").exists()  # refused before searching


def test_small_data_proceeds_with_a_widened_margin(setup, tmp_path):
    model, data = setup
    out = tmp_path / "o.onnx"
    r = auto(model, out, data=str(data), max_drop=0.01, max_trials=10, workers=1,
             allow_small_data=True)  # fmt: skip
    v = r.verification
    assert v.widened and v.margin > 0.01 and v.samples_needed == 299
    for f in v.finalists:  # the widened margin only lets through "no sample changed"
        assert f.accepted == (f.verify_drop == 0.0)
    md = (tmp_path / "o.onnx.report.md").read_text()
    assert "Verification on held-back data" in md and "WIDENED" in md


def test_finalists_are_judged_on_held_back_data_by_their_bound(setup, tmp_path):
    model, data = setup
    out = tmp_path / "o.onnx"
    verify = tmp_path / "verify.npz"
    write_data(verify, n=400, seed=7)
    r = auto(model, out, data=str(data), verify=str(verify), max_drop=0.1, max_trials=20,
             workers=1)  # fmt: skip
    v = r.verification
    assert v.samples == 400 and v.method == "exact binomial" and not v.widened
    assert v.test_confidence == pytest.approx(0.95)  # fixed sequence: no Bonferroni
    assert r.found and v.finalists[0].search_drop <= 0.1
    chosen = next(f for f in v.finalists if f.trial == r.chosen.id)
    assert chosen.accepted and chosen.bound <= 0.1
    # the bound re-derived from an independent check on the held-back data
    rep = check(model, out, data=str(verify), runs=0, max_drop=0.1, confidence=v.test_confidence)
    assert rep.drop_bound.upper == pytest.approx(chosen.bound) and rep.passed
    assert rep.drop == pytest.approx(chosen.verify_drop)
    # Tested safest first: every safer finalist was accepted, and the sequence stopped at
    # the first cheaper one rejected (none cheaper than that was tested).
    i = v.finalists.index(chosen)
    assert all(f.accepted for f in v.finalists[i:])
    assert len(v.finalists[:i]) <= 1
    for f in v.finalists[:i]:
        assert not f.accepted and f.bound > 0.1
    assert not list(tmp_path.glob("finalist_*"))  # no finalist left beside the output
    data_json = json.loads((tmp_path / "o.onnx.report.json").read_text())
    assert data_json["verification"]["finalists"][0]["bound"] is not None


def test_check_confidence_gates_on_the_bound_not_the_point(setup, tmp_path, capsys):
    model, data = setup
    out = tmp_path / "w.onnx"
    assert main(["compress", str(model), "-o", str(out), "--prune-sparsity", "0.5"]) == 0
    capsys.readouterr()
    base = ["check", str(model), str(out), "--data", str(data), "--runs", "0"]
    plain = check(model, out, data=str(data), runs=0)
    k = round(plain.drop * 300)
    assert 0 < k < 150  # pruning flips some of the fragile layer's answers
    # a budget just above the measured drop passes without --confidence, fails with it
    budget = f"{plain.drop + 0.001:.4f}"
    assert main([*base, "--max-drop", budget]) == 0
    assert main([*base, "--max-drop", budget, "--confidence", "0.95"]) == 1
    assert "upper bound" in capsys.readouterr().out
    assert main([*base, "--max-drop", "0.5", "--confidence", "0.95"]) == 0
    assert main([*base, "--max-drop", "0.5", "--confidence", "1.5"]) == 2


def test_the_held_back_share_grows_to_what_resolves_the_budget(save_model, tmp_path):
    # 400 samples: a third (133) cannot bound a 1% agreement drop at 95% (299 needed),
    # 5/6 of them can: auto holds back 299 and searches on the rest, without refusing.
    model = save_model(robust_fragile_model())
    data = tmp_path / "data.npz"
    write_data(data, n=400)
    r = auto(model, tmp_path / "o.onnx", data=str(data), max_drop=0.01, max_trials=6,
             workers=1)  # fmt: skip
    v = r.verification
    assert v.samples == 299 and not v.widened and v.margin == 0.01
    assert "held back 299 of 400" in v.data
    # an explicit share is the user's: kept, and refused when too small
    with pytest.raises(OnnxcompError, match="299 would"):
        auto(model, tmp_path / "p.onnx", data=str(data), max_drop=0.01, max_trials=6,
             workers=1, verify_fraction=0.5)  # fmt: skip


def test_split_tops_up_to_at_least_and_keeps_classes_balanced(tmp_path):
    x = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    y = np.repeat(np.arange(3), 100)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = split_data(str(tmp_path / "d.npz"), SPECS, tmp_path / "a", labels="y", at_least=250)
    assert (s.search_samples, s.verify_samples) == (50, 250)
    counts = np.bincount(_rows(s.verify, "y")[1])
    assert counts.max() - counts.min() <= 1


def test_a_fixed_batch_model_gets_one_sample_per_held_back_file(tmp_path):
    """A detector exported at batch 1 with a folder of one-image feeds: the split must
    not join images into one [k, ...] feed the model refuses."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxcomp.auto.split import split_data
    from onnxcomp.io.data import input_specs, open_data
    from onnxcomp.io.model_io import load

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    for i in range(9):
        np.savez(feeds / f"{i}.npz", x=np.full((1, 4), i, np.float32))
    specs = input_specs(load(tmp_path / "m.onnx"))
    split = split_data(str(feeds), specs, tmp_path / "split")
    for part in (split.search, split.verify):
        batches = list(open_data(part, specs))
        assert batches and all(b.feed["x"].shape == (1, 4) for b in batches)
