"""One-sided upper bounds on a metric drop, from per-sample drops (pure numpy, seeded).

A budget judged on a point estimate passes whichever candidate got lucky on the few
samples it was measured on (the winner's curse). A drop is accepted when its *upper
bound* at a chosen confidence is within the budget.

- Binary drops (accuracy, top-1 agreement): exact Clopper-Pearson bound on the share of
  samples the compressed model newly gets wrong (or disagrees on). For agreement that is
  the drop itself. For accuracy it bounds P(newly wrong) >= P(newly wrong) - P(newly
  right) = the accuracy drop, so the bound is valid and exact, and it deliberately gives
  no credit for samples the compressed model happens to fix: those flips are the noise a
  search exploits. Exact rather than normal/Wilson because budgets are a few samples
  wide: with zero errors a normal bound is 0, the exact one is 1 - alpha^(1/n).
- Continuous drops (1 - cosine): paired bootstrap of the mean drop over samples (the
  same samples score the original and the candidate), percentile bound, its distance
  from the mean scaled by sqrt(n / (n - 1)) because the plain bootstrap's spread is
  biased low on the small sets this is used on.

The beta quantile behind Clopper-Pearson is found by bisection on the regularized
incomplete beta, evaluated with its continued fraction (scipy is not a dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BINARY_METRICS = ("accuracy", "agreement")
BOOTSTRAP_RESAMPLES = 2000
MIN_BOOTSTRAP_SAMPLES = 8  # below this a bootstrap bound means nothing


@dataclass(frozen=True)
class DropBound:
    estimate: float  # the mean per-sample drop (the point estimate)
    upper: float  # one-sided upper bound at ``confidence``
    samples: int
    confidence: float
    method: str  # "exact binomial" | "bootstrap" | "none"

    def within(self, budget: float) -> bool:
        return self.upper <= budget + 1e-12


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta (modified Lentz), converges for
    x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def binomial_upper(k: int, n: int, confidence: float) -> float:
    """Clopper-Pearson: the largest p with P(Binomial(n, p) <= k) >= 1 - confidence."""
    if n <= 0 or k >= n:
        return 1.0
    if k == 0:
        return 1.0 - (1.0 - confidence) ** (1.0 / n)
    lo, hi = k / n, 1.0  # I_p(k + 1, n - k) rises with p; solve I_p = confidence
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if betainc(k + 1, n - k, mid) < confidence:
            lo = mid
        else:
            hi = mid
    return hi


def binomial_lower(k: int, n: int, confidence: float) -> float:
    """Clopper-Pearson: the smallest p with P(Binomial(n, p) >= k) >= 1 - confidence."""
    if n <= 0 or k <= 0:
        return 0.0
    return 1.0 - binomial_upper(n - k, n, confidence)


def bootstrap_upper(drops: np.ndarray, confidence: float, seed: int = 0) -> float:
    """Paired bootstrap upper bound on the mean of ``drops`` (see the module doc)."""
    d = np.asarray(drops, dtype=np.float64).reshape(-1)
    n = d.size
    if n < 2:
        return float("inf")
    rng = np.random.default_rng(seed)
    means = np.empty(BOOTSTRAP_RESAMPLES)
    step = max(1, 2_000_000 // n)  # bound the index matrix to ~16 MB
    for start in range(0, BOOTSTRAP_RESAMPLES, step):
        rows = min(step, BOOTSTRAP_RESAMPLES - start)
        means[start : start + rows] = d[rng.integers(0, n, (rows, n))].mean(axis=1)
    mean = float(d.mean())
    q = float(np.quantile(means, confidence))
    return mean + max(q - mean, 0.0) * math.sqrt(n / (n - 1))


def is_binary(metric: str, binary: bool | None = None) -> bool:
    """Whether per-sample drops are decisions: said by the judge, else by the name."""
    return binary if binary is not None else metric in BINARY_METRICS


def loss(drops: np.ndarray | None, metric: str, *, binary: bool | None = None) -> float | None:
    """The statistic the bound is on: the share of samples newly wrong (or disagreeing)
    for binary metrics, the mean drop otherwise. Searching on it keeps the search from
    banking on samples a candidate happens to fix."""
    if drops is None or not np.size(drops):
        return None
    d = np.asarray(drops, dtype=np.float64)
    return float(np.mean(d > 0)) if is_binary(metric, binary) else float(d.mean())


def drop_bound(
    drops: np.ndarray | None,
    metric: str,
    confidence: float,
    *,
    seed: int = 0,
    binary: bool | None = None,
) -> DropBound | None:
    """Upper bound of the mean drop; None without per-sample drops (a custom metric)."""
    if drops is None:
        return None
    d = np.asarray(drops, dtype=np.float64).reshape(-1)
    n = int(d.size)
    estimate = float(d.mean()) if n else float("nan")
    if is_binary(metric, binary):
        upper = binomial_upper(int(np.count_nonzero(d > 0)), n, confidence)
        return DropBound(estimate, upper, n, confidence, "exact binomial")
    return DropBound(estimate, bootstrap_upper(d, confidence, seed), n, confidence, "bootstrap")


def smallest_bound(n: int, metric: str, confidence: float, *, binary: bool | None = None) -> float:
    """The best upper bound ``n`` samples can give (a candidate that loses nothing)."""
    if is_binary(metric, binary):
        return binomial_upper(0, n, confidence)
    return 0.0 if n >= MIN_BOOTSTRAP_SAMPLES else float("inf")


def samples_needed(
    budget: float, metric: str, confidence: float, *, binary: bool | None = None
) -> int | None:
    """Fewest samples whose best bound fits ``budget``; None when no count can."""
    if not is_binary(metric, binary):
        return MIN_BOOTSTRAP_SAMPLES
    if budget <= 0.0:
        return None
    if budget >= 1.0:
        return 1
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - budget)))
    while n > 1 and binomial_upper(0, n - 1, confidence) <= budget:  # float rounding
        n -= 1
    while binomial_upper(0, n, confidence) > budget:
        n += 1
    return n
