"""auto: ranks sensitivity, respects the budget, says when nothing fits, replays exactly."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from model_builders import robust_fragile_model, write_data

from onnxcomp import check
from onnxcomp.auto import auto
from onnxcomp.auto.executor import process_pool
from onnxcomp.cli import main


@pytest.fixture
def setup(save_model, tmp_path):
    model = save_model(robust_fragile_model())
    data = tmp_path / "data.npz"
    write_data(data, n=600)  # a third held back: 200 samples bound a drop to a few points
    return model, data


def test_fragile_layer_ranks_as_more_sensitive_and_budget_holds(setup, tmp_path):
    model, data = setup
    out = tmp_path / "auto.onnx"
    result = auto(model, out, data=str(data), max_drop=0.15, max_trials=40, workers=1)
    assert result.found and out.exists()
    sens = result.sensitivity
    harsh = result.ladder[-1]  # the most compressed rung
    assert sens["robust"][harsh] < sens["fragile"][harsh]
    chosen = result.chosen.config
    assert chosen["robust"] > chosen.get("fragile", 0)
    # the budget, re-measured independently on the returned model
    report = check(model, out, data=str(data), runs=0)
    assert 1.0 - report.outputs[0].top1_agreement <= 0.15 + 1e-9
    # and it beats (or ties) the best uniform setting on the objective
    assert result.chosen.bytes <= result.best_global.bytes


def test_recipe_replay_gives_identical_bytes(setup, tmp_path):
    model, data = setup
    out = tmp_path / "auto.onnx"
    result = auto(model, out, data=str(data), max_drop=0.1, max_trials=25, workers=1)
    replay = tmp_path / "replay.onnx"
    assert main(["compress", str(model), "--recipe", result.recipe, "-o", str(replay)]) == 0
    assert replay.read_bytes() == out.read_bytes()


def test_nothing_fits_exits_1_and_still_reports(setup, tmp_path, capsys):
    model, data = setup
    out = tmp_path / "auto.onnx"
    # int8 weights alone already move some scores: a zero budget on cosine cannot be met
    code = main(
        [
            "auto",
            str(model),
            "-o",
            str(out),
            "--data",
            str(data),
            "--max-drop",
            "0",
            "--metric",
            "cosine",
            "--max-trials",
            "8",
            "--workers",
            "1",
            "--json",
        ]
    )
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    assert result["found"] is False
    assert not out.exists()
    md = (tmp_path / "auto.onnx.report.md").read_text()
    assert "nothing fits the budget" in md
    assert json.loads((tmp_path / "auto.onnx.report.json").read_text())["found"] is False


def test_trials_run_in_worker_processes(setup, tmp_path):
    model, data = setup
    out = tmp_path / "auto.onnx"
    result = auto(model, out, data=str(data), max_drop=0.1, max_trials=12, workers=2)
    assert os.getpid() not in {t.pid for t in result.trials}
    assert all(t.ok for t in result.trials)


def _meet(barrier):
    barrier.wait(timeout=60)  # returns only when two tasks are inside at the same time
    return os.getpid()


def test_process_pool_runs_trials_concurrently():
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(2)
        pool = process_pool(2, _noop, ())
        try:
            pids = list(pool.map(_meet, [barrier, barrier]))
        finally:
            pool.shutdown()
    assert len(set(pids)) == 2


def _noop():
    return None


def test_custom_metric_callable(setup, tmp_path):
    model, data = setup

    def mean_score(session, source):
        return float(np.mean([session.run(None, b.feed)[0].max(1).mean() for b in source]))

    out = tmp_path / "auto.onnx"
    result = auto(model, out, data=str(data), max_drop=0.5, metric=mean_score, max_trials=8)
    assert result.metric == "mean_score" and result.found


def test_recovery_inside_the_search_is_replayable(setup, tmp_path):
    model, data = setup
    out = tmp_path / "auto.onnx"
    result = auto(
        model, out, calib=str(data), max_drop=0.1, max_trials=15, workers=1, recover="sparsegpt"
    )
    assert result.found
    replay = tmp_path / "replay.onnx"
    assert main(["compress", str(model), "--recipe", result.recipe, "-o", str(replay)]) == 0
    assert replay.read_bytes() == out.read_bytes()


def test_latency_ladder_removes_channels_only_where_they_can_go(tmp_path):
    """Channel rungs past int8 for layers whose channels structured pruning can remove;
    a layer that cannot follow tops out at int8 (its channel rungs would repeat it)."""
    import numpy as np
    import onnx
    from model_builders import transformer

    from onnxcomp.auto.space import build_space
    from onnxcomp.pipeline.compress import compress

    src = tmp_path / "t.onnx"
    onnx.save(transformer(dim=128, ff=256, layers=1), src)
    space = build_space(str(src), objective="latency", has_calib=True)
    labels = [s.label for s in space.ladder]
    assert labels == ["float", "int4", "int8", "int8+25% channels removed",
                      "int8+50% channels removed"]  # fmt: skip
    assert space.top("l0_f1_w") == 4  # the FFN's inner neurons can go
    assert space.top("l0_q_w") == 2  # Q's channels meet K's in a MatMul: not removable
    assert space.clamp({"l0_q_w": 4, "l0_f1_w": 4}) == {"l0_q_w": 2, "l0_f1_w": 4}
    calib = tmp_path / "calib.npz"
    np.savez(calib, ids=np.random.default_rng(0).integers(0, 64, (16, 12)).astype(np.int64))
    space.base.calib = str(calib)
    options = space.to_options({"l0_f1_w": 4})
    assert options.layers["l0_f1_w"].prune_channels == 0.5
    out = tmp_path / "o.onnx"
    result = compress(src, out, options)
    assert any(n.startswith("channels of l0_f1_mm") for n in result.notes), result.notes
    w = {i.name: i for i in onnx.load(out).graph.initializer}
    assert any(list(t.dims) == [128, 128] for n, t in w.items() if n.startswith("l0_f1_w"))


def test_the_task_is_judged_on_and_recorded_in_the_recipe(setup, tmp_path):
    model, data = setup
    out = tmp_path / "auto.onnx"
    result = auto(model, out, data=str(data), max_drop=0.1, max_trials=12, workers=1,
                  task="classify")  # fmt: skip
    assert result.metric == "classify: top-1 agreement"
    text = Path(result.recipe).read_text()
    assert 'task = "classify"' in text
    replay = tmp_path / "replay.onnx"
    assert main(["compress", str(model), "--recipe", result.recipe, "-o", str(replay)]) == 0
    assert replay.read_bytes() == out.read_bytes()
