"""methods/int4/: which weights take 4-bit blocks, the blocks' pass, AWQ, the Hessians."""

from __future__ import annotations

import numpy as np
from _models import data_for, mlp

from onnxcomp.graph.weights import find_weights
from onnxcomp.methods.int4.awq import awq_scale
from onnxcomp.methods.int4.flow import layer_hessians
from onnxcomp.methods.int4.gather_int4 import GatherInt4Pass
from onnxcomp.methods.int4.quantize_int4 import QuantizeInt4Pass, as_kn, int4_slot
from onnxcomp.passes.channel_scale import scale_groups


def test_matmul_weights_are_int4_slots_in_kn_layout() -> None:
    weights = {w.name: w for w in find_weights(mlp(hidden=256))}
    assert int4_slot(weights["w1"]) is None
    assert "tiny" in (int4_slot(weights["w2"]) or "")
    assert as_kn(weights["w1"]).shape == (64, 256)


def test_quantize_int4_pass_writes_blocks() -> None:
    model = mlp(hidden=256, opset=21)
    step = QuantizeInt4Pass(block_size=32)
    assert step(model).modified
    assert [r.bits for r in step.records] == [4]


def test_gather_int4_leaves_a_model_without_tables() -> None:
    assert not GatherInt4Pass()(mlp()).modified


def test_layer_hessians_are_symmetric_and_asked_for_lazily() -> None:
    model = mlp()
    weights = find_weights(model)
    asked = []

    def data():
        asked.append(1)
        return data_for(model)

    h = layer_hessians(model, weights, data)
    assert asked == [1]
    assert h["w1"].shape == (64, 64) and np.allclose(h["w1"], h["w1"].T)
    assert layer_hessians(model, [], data) == {} and asked == [1]


def test_awq_scale_never_makes_the_error_worse() -> None:
    model = mlp()
    groups = scale_groups(find_weights(model))
    h = layer_hessians(model, find_weights(model), lambda: data_for(model))
    group = next(g for g in groups if g.weights[0].name == "w1")
    s, _alpha, before, after = awq_scale(group, h["w1"], 32, True)
    assert s is None or after <= before
