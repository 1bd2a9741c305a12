"""The numpy core of recovery: GPTQ, SparseGPT, X^T X and im2col, bias shifts."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.methods.prune.magnitude import sparsity_mask
from onnxcomp.numerics.bias_correction import ChannelMean, corrected_int_bias, mean_shift
from onnxcomp.numerics.gptq import gptq_quantize, rtn_quantize
from onnxcomp.numerics.hessian import HessianAccumulator, conv_pads, im2col
from onnxcomp.numerics.obs import output_error
from onnxcomp.numerics.scales import quantize_weight_symmetric
from onnxcomp.numerics.sparsegpt import sparsegpt_prune


def _correlated(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Inputs with strongly correlated features, like real activations."""
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    return rng.standard_normal((n, k)) @ mix + 0.3 * rng.standard_normal((n, k))


@pytest.mark.parametrize("act_order", [False, True])
def test_identity_hessian_is_plain_rounding(act_order):
    w = np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32)
    q, s = gptq_quantize(w, np.eye(40), act_order=act_order)
    q_ref, s_ref = quantize_weight_symmetric(w, 0)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(q, q_ref)


def test_rank_deficient_inputs_are_damped():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 32))  # 5 samples, 32 features: rank 5
    x[:, 7] = 0.0  # a dead input
    w = rng.standard_normal((8, 32)).astype(np.float32)
    h = x.T @ x
    q, s = gptq_quantize(w, h)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    w_q = q * s[:, None]
    assert np.isfinite(w_q).all()
    q_r, s_r = rtn_quantize(w)
    assert output_error(w, w_q, h) <= output_error(w, q_r * s_r[:, None], h)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_gptq_never_worse_than_rounding(seed, bits, per_channel):
    rng = np.random.default_rng(seed)
    x = _correlated(rng, 512, 48)
    w = rng.standard_normal((24, 48)).astype(np.float32)
    h = x.T @ x
    q, s = gptq_quantize(w, h, bits=bits, per_channel=per_channel, block=16)
    q_r, s_r = rtn_quantize(w, bits=bits, per_channel=per_channel)
    s_col = s[:, None] if s.ndim else s
    sr_col = s_r[:, None] if s_r.ndim else s_r
    np.testing.assert_array_equal(s, s_r)  # same scales: only the codes differ
    gptq_err = np.linalg.norm(x @ (w - q * s_col).T)
    plain_err = np.linalg.norm(x @ (w - q_r * sr_col).T)
    assert gptq_err <= plain_err
    assert np.abs(q).max() <= (1 << (bits - 1)) - 1


def test_gptq_keeps_pruned_zeros():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 32)).astype(np.float32)
    w[sparsity_mask(w, 0.5)] = 0
    x = _correlated(rng, 256, 32)
    q, _ = gptq_quantize(w, x.T @ x, keep_zero=w == 0)
    assert np.all(q[w == 0] == 0)


@pytest.mark.parametrize("seed", range(3))
def test_sparsegpt_beats_magnitude_at_half(seed):
    rng = np.random.default_rng(seed)
    x = _correlated(rng, 512, 64)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    w_s = sparsegpt_prune(w, x.T @ x, 0.5, block=16)
    w_m = np.where(sparsity_mask(w, 0.5), 0, w)
    assert np.count_nonzero(w_s == 0) == np.count_nonzero(w_m == 0) == w.size // 2
    assert np.linalg.norm(x @ (w - w_s).T) < np.linalg.norm(x @ (w - w_m).T)


def test_hessian_accumulates_in_batches():
    x = np.random.default_rng(3).standard_normal((100, 6))
    acc = HessianAccumulator(6)
    for part in np.array_split(x, 7):
        acc.update(part)
    np.testing.assert_allclose(acc.matrix, x.T @ x / 100)


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"strides": [2, 1], "pads": [1, 0, 2, 1]},
        {"dilations": [2, 2], "pads": [2, 2, 2, 2], "group": 2},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER", "group": 4},
    ],
)
def test_im2col_reproduces_conv(attrs):
    rng = np.random.default_rng(4)
    groups = attrs.get("group", 1)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6 if groups != 4 else 8, 4 // groups, 3, 2)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x})
    strides = attrs.get("strides", [1, 1])
    dil = attrs.get("dilations", [1, 1])
    pads = conv_pads(
        attrs.get("auto_pad", "NOTSET"), x.shape[2:], (3, 2), strides, dil, attrs.get("pads", [])
    )
    chunks = list(im2col(x, (3, 2), strides, pads, dil, groups))
    assert len(chunks) == 1
    per = w.shape[0] // groups
    outs = [
        cols @ w[g * per : (g + 1) * per].reshape(per, -1).T for g, cols in enumerate(chunks[0])
    ]
    got = np.concatenate(outs, axis=1).reshape(x.shape[0], *y.shape[2:], w.shape[0])
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), y, rtol=1e-4, atol=1e-4)


def test_mean_shift_and_int_bias():
    rng = np.random.default_rng(5)
    t, s = ChannelMean(1), ChannelMean(1)
    teacher = rng.standard_normal((10, 3, 4, 4))
    for part in np.array_split(teacher, 3):
        t.update(part)
        s.update(part + np.array([0.5, -1.0, 0.0])[None, :, None, None])
    np.testing.assert_allclose(mean_shift(s, t), [0.5, -1.0, 0.0], atol=1e-12)
    q = np.array([10, -3, 0], np.int32)
    moved = corrected_int_bias(q, np.float32(0.25), np.array([0.5, -1.0, 0.0]))
    np.testing.assert_array_equal(moved, [8, 1, 0])
