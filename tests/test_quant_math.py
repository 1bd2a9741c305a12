"""The int8 weight arithmetic, checked against its definition."""

from __future__ import annotations

import numpy as np
import pytest

from onnxcomp.numerics.scales import dequantize, quantize_weight_symmetric, symmetric_scale


@pytest.mark.parametrize("axis", [None, 0, 1, 3])
def test_round_trip_error_is_at_most_half_a_step(axis):
    w = np.random.default_rng(1).standard_normal((6, 5, 3, 3)).astype(np.float32)
    q, scale = quantize_weight_symmetric(w, axis)
    err = np.abs(dequantize(q, scale, axis=axis) - w)
    step = scale if axis is None else scale.reshape([-1 if i == axis else 1 for i in range(4)])
    # half a quantization step, plus float32 rounding of the product
    assert np.all(err <= step / 2 + 1e-6 * np.abs(w) + 1e-7)


def test_one_scale_per_channel_on_the_channel_axis():
    w = np.random.default_rng(2).standard_normal((4, 7)).astype(np.float32)
    w[:, 3] *= 100.0  # one loud channel along axis 1
    _, scale = quantize_weight_symmetric(w, 1)
    assert scale.shape == (7,)
    np.testing.assert_allclose(scale, np.abs(w).max(axis=0) / 127, rtol=1e-6)
    assert scale[3] > 50 * np.delete(scale, 3).max()


def test_zeros_stay_zero_and_extremes_hit_127():
    w = np.array([[0.0, 0.37, -1.0], [0.0, 0.0, 0.0]], np.float32)
    q, scale = quantize_weight_symmetric(w, 0)
    assert q.dtype == np.int8
    assert q[0, 0] == 0 and np.all(q[1] == 0)
    assert q[0, 2] == -127
    assert scale[1] == 1.0  # an all-zero channel still gets a valid, non-zero scale
    assert np.all(dequantize(q, scale, axis=0)[w == 0] == 0)


def test_values_on_a_lattice_are_stored_exactly():
    """YOLOv8's DFL Conv holds 0..15: max/127 scaling would store 1 as 0.945."""
    w = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    q, scale = quantize_weight_symmetric(w, 0)
    assert np.array_equal(dequantize(q, scale, axis=0), w) and q.max() == 15
    halves = np.array([[0.0, 0.5, -1.0], [0.0, 0.0, 0.0]], np.float32)
    q, scale = quantize_weight_symmetric(halves, 0)
    assert np.array_equal(dequantize(q, scale, axis=0), halves) and np.all(scale > 0)
    noisy = w + np.float32(1e-3)  # off the lattice: the usual max scaling
    q, _ = quantize_weight_symmetric(noisy, 0)
    assert q.max() == 127


def test_scales_are_float32_and_never_zero():
    w = np.zeros((3, 3), np.float32)
    scale = symmetric_scale(w, None)
    assert scale.dtype == np.float32 and scale > 0


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_blockwise_weight_quantization_is_bit_identical(monkeypatch, axis) -> None:
    # Big weights go through quant_math in row blocks to bound temporaries; the
    # result must not depend on the block size.
    from onnxcomp.numerics import scales as quant_math

    rng = np.random.default_rng(7)
    w = (rng.standard_normal((37, 5, 3)) * rng.random((37, 1, 1)) * 3).astype(np.float32)
    w[4] = 0.0  # an all-zero channel
    whole_q, whole_s = quant_math.quantize_weight_symmetric(w, axis)
    whole_err = quant_math.max_rounding_error(w, whole_q, whole_s, axis)
    monkeypatch.setattr(quant_math, "BLOCK", 16)  # one 15-value row per block
    q, s = quant_math.quantize_weight_symmetric(w, axis)
    np.testing.assert_array_equal(s, whole_s)
    np.testing.assert_array_equal(q, whole_q)
    assert quant_math.max_rounding_error(w, q, s, axis) == whole_err
    assert 0 < whole_err <= float(np.max(whole_s)) / 2 + 1e-7  # half a step at most
