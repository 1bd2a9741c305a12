"""Bounds on a drop: exact binomial against brute-force sums, bootstrap coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxcomp.stats import (
    betainc,
    binomial_lower,
    binomial_upper,
    bootstrap_upper,
    drop_bound,
    loss,
    samples_needed,
    smallest_bound,
)


def _cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(("k", "n", "conf"), [(1, 10, 0.95), (3, 100, 0.95), (7, 300, 0.9)])
def test_clopper_pearson_leaves_exactly_alpha_below(k, n, conf):
    p = binomial_upper(k, n, conf)
    # the defining equation: P(X <= k | p_upper) = 1 - confidence
    assert _cdf(k, n, p) == pytest.approx(1 - conf, abs=1e-9)


@pytest.mark.parametrize(("k", "n", "conf"), [(1, 61, 0.8), (4, 100, 0.95), (12, 1000, 0.8)])
def test_clopper_pearson_lower_leaves_exactly_alpha_above(k, n, conf):
    p = binomial_lower(k, n, conf)
    # the defining equation: P(X >= k | p_lower) = 1 - confidence
    assert 1 - _cdf(k - 1, n, p) == pytest.approx(1 - conf, abs=1e-9)
    assert binomial_lower(0, n, conf) == 0.0


def test_zero_errors_is_the_closed_form_and_the_rule_of_three():
    assert binomial_upper(0, 300, 0.95) == pytest.approx(1 - 0.05 ** (1 / 300))
    assert binomial_upper(0, 300, 0.95) == pytest.approx(3 / 300, rel=0.01)
    assert binomial_upper(5, 5, 0.95) == 1.0


def test_betainc_matches_a_binomial_tail():
    # I_x(a, n - a + 1) = P(Binomial(n, x) >= a)
    n, a, x = 12, 4, 0.3
    assert betainc(a, n - a + 1, x) == pytest.approx(1 - _cdf(a - 1, n, x), abs=1e-12)


def test_samples_needed_is_the_smallest_count_that_resolves_the_budget():
    n = samples_needed(0.01, "accuracy", 0.95)
    assert n == 299
    assert smallest_bound(n, "accuracy", 0.95) <= 0.01 < smallest_bound(n - 1, "accuracy", 0.95)
    assert samples_needed(0.0, "agreement", 0.95) is None


def test_accuracy_bound_gives_no_credit_for_fixed_samples():
    # 3 newly wrong, 3 newly right: the drop is 0, the bound is that of 3 errors in 100
    d = np.zeros(100)
    d[:3], d[3:6] = 1, -1
    b = drop_bound(d, "accuracy", 0.95)
    assert b.estimate == 0.0
    assert b.upper == pytest.approx(binomial_upper(3, 100, 0.95))
    assert loss(d, "accuracy") == pytest.approx(0.03)


def test_bootstrap_bound_covers_the_true_mean_about_as_often_as_asked():
    rng = np.random.default_rng(0)
    true_mean, hits, runs = 0.01, 0, 300
    for i in range(runs):
        d = rng.exponential(true_mean, 30)  # skewed, like 1 - cosine
        hits += bootstrap_upper(d, 0.9, seed=i) >= true_mean
    # 90% asked; a skewed 30-sample mean: within a few binomial SDs of 0.9
    assert 0.84 <= hits / runs <= 0.97


def test_bootstrap_is_seeded_and_none_without_samples():
    d = np.random.default_rng(1).random(20) * 0.01
    assert bootstrap_upper(d, 0.95, seed=3) == bootstrap_upper(d, 0.95, seed=3)
    assert drop_bound(None, "cosine", 0.95) is None
