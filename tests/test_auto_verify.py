"""auto's verification order and its search-side budget test, on hand-made candidates."""

from __future__ import annotations

import pytest

from onnxcomp.auto.executor import SerialExecutor
from onnxcomp.auto.search import SearchState
from onnxcomp.auto.space import Space
from onnxcomp.auto.trials import TrialResult
from onnxcomp.auto.verify import _sequence, pick_finalists


def _t(id_, nbytes, drop=0.0, deviation=None, lost=None, samples=None):
    return TrialResult(
        id_, "x", {}, drop=drop, loss=drop, deviation=deviation, lost=lost, samples=samples,
        bytes=nbytes,
    )  # fmt: skip


def test_sequence_is_safest_first_and_each_step_cheaper():
    # risk = deviation for a 0/1 metric: 4 is dearer than 2, which was already tested
    # (4 could never be chosen over 2, and its rejection would only end the sequence)
    cands = [_t(1, 100, 0, 0.01), _t(2, 300, 0, 0.0001), _t(3, 200, 0, 0.001), _t(4, 400, 0, 0.005)]
    assert [c.id for c in _sequence(cands)] == [2, 3, 1]


def test_without_a_deviation_the_drop_orders_them():
    cands = [_t(1, 100, 0.04), _t(2, 300, 0.0), _t(3, 200, 0.02)]
    assert [c.id for c in _sequence(cands)] == [2, 3, 1]


def test_finalists_cover_the_cost_risk_front_where_the_loss_is_blind():
    # all lose nothing on the search part: the margins alone pick the four cheapest
    cands = [_t(i, 100 * i, 0.0, 0.01 / i) for i in range(1, 21)]
    picked = pick_finalists(cands, 0.01, lambda c: c.bytes)
    ids = sorted(c.id for c in picked)
    assert ids[:4] == [1, 2, 3, 4] and len(ids) == 12
    assert 20 in ids  # the safest of the front is a finalist


def test_search_fit_for_a_01_metric_tolerates_what_the_part_cannot_tell():
    state = SearchState(Space([], []), 0.01, "size", SerialExecutor(), "")
    # one changed sample of 61 is 1.6 points, yet a true 1% rate gives >= 1 in 46% of
    # draws; two of 61 is over budget at 80%
    assert state.fits(_t(1, 10, 1 / 61, 0.001, lost=1, samples=61))
    assert not state.fits(_t(2, 10, 2 / 61, 0.001, lost=2, samples=61))
    # a continuous metric keeps the point estimate
    assert not state.fits(_t(3, 10, 0.011))
    assert state.fits(_t(4, 10, 0.009))


def test_a_01_metric_score_carries_how_far_the_outputs_moved(save_model, tmp_path):
    import numpy as np
    from model_builders import robust_fragile_model, write_data

    from onnxcomp import compress
    from onnxcomp.evaluate import Evaluator
    from onnxcomp.io.data import input_specs, open_data
    from onnxcomp.io.model_io import load

    src = save_model(robust_fragile_model())
    data = tmp_path / "d.npz"
    write_data(data, n=100)
    x = np.load(data)["x"]
    np.savez(tmp_path / "l.npz", x=x, y=np.zeros(100, np.int64))
    out = tmp_path / "c.onnx"
    compress(src, out, quantize="codebook", bits=3)
    specs = input_specs(load(src))
    acc = Evaluator(src, open_data(str(tmp_path / "l.npz"), specs, labels="y"))
    cos = Evaluator(src, open_data(str(data), specs), metric="cosine")
    moved, same = acc.score(out), acc.score(src)
    assert acc.metric_name == "classify: accuracy" and acc.binary and moved.deviation > 1e-4
    assert abs(same.deviation) < 1e-12  # the original against itself: float rounding
    # the cosine metric is its own continuous gauge: no second one
    c = cos.score(out)
    assert c.deviation is None and np.isclose(moved.deviation, c.drop)


def test_the_order_trusts_the_larger_of_measured_and_summed_lone_risks():
    from onnxcomp.auto.search import predict_risk

    state = SearchState(Space([], []), 0.01, "size", SerialExecutor(), "")
    state.risk = {"a": {1: 1e-5, 2: 1e-4}, "b": {1: 2e-5, 2: 3e-4}}
    lucky = _t(1, 100, 0.0, 5e-6)  # measured almost nothing on the few search samples
    lucky.config = {"a": 2, "b": 2}
    safe = _t(2, 200, 0.0, 4e-5)
    safe.config = {"a": 1, "b": 1}
    assert predict_risk(state, lucky) == pytest.approx(4e-4)
    assert predict_risk(state, safe) == pytest.approx(3e-5)
    unprobed = _t(3, 50, 0.0, 1e-3)
    unprobed.config = {"a": 3}
    assert predict_risk(state, unprobed) is None
    for c in (lucky, safe):
        c.extra["predicted_risk"] = predict_risk(state, c)
    # safe first although the lucky one measured lower: its layers' probes say otherwise
    assert [c.id for c in _sequence([lucky, safe])] == [2, 1]


class _Recorder(SerialExecutor):
    """Runs nothing: records the configurations a stage asks for."""

    def __init__(self) -> None:
        self.configs: list[dict[str, int]] = []

    def map(self, fn, items):
        for task in items:
            self.configs.append(dict(task.config))
            yield TrialResult(task.id, task.stage, task.config, drop=0.0, bytes=1)


def test_fill_spends_its_trials_on_distinct_untried_assignments():
    from onnxcomp.auto.search import _key, assign, fill_front
    from onnxcomp.auto.space import CODEBOOK_LADDER, Setting, TunableLayer

    ladder = [Setting("float")] + [Setting("weights", s, b) for b, s in CODEBOOK_LADDER]
    space = Space([TunableLayer("a", ["MatMul"], 100), TunableLayer("b", ["MatMul"], 10)], ladder)
    recorder = _Recorder()
    state = SearchState(space, 0.01, "size", recorder, "", workers=1, max_trials=100)
    # thresholds 2e-5 and 3e-5 give the same assignment: "b"'s rung 2 measured below
    # its rung 1, so "b" is at rung 2 for both
    state.risk = {"a": {1: 1e-5, 2: 4e-5, 3: 9e-5}, "b": {1: 3e-5, 2: 2e-5, 3: 5e-5}}
    tried = assign(state, 1e-5)
    state.seen[_key(tried)] = TrialResult(0, "bisect", tried, drop=0.0)
    fill_front(state, most=3)
    keys = [_key(c) for c in recorder.configs]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert tried not in recorder.configs  # already tried: no trial spent on it again
    everything = {_key(assign(state, t)) for s in state.risk.values()
                  for t in s.values()}  # fmt: skip
    assert set(keys) <= everything
    # the safest and the harshest distinct assignment are both among them
    assert recorder.configs[0] == {"a": 1, "b": 2} and recorder.configs[-1] == {"a": 3, "b": 3}
