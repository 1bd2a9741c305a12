"""Judge auto's finalists on held-back data, by a one-sided bound, not a point estimate.

The search ranks configurations by their drop on the search part; the cheapest that
fits is the one most likely to have got lucky there (the winner's curse). So a few
finalists, chosen with growing safety margins on the search part, are judged on data the
search never saw: a finalist is accepted when the upper bound of its drop there is
within the budget.

Several finalists are tested on the same data, so the tests are ordered before any
verification score is seen (fixed-sequence testing): safest first (least risk on the
search part), then ever cheaper ones, each at the full confidence c, stopping at the
first that fails. A wrong acceptance can only happen at the first false hypothesis
reached, so the chosen model (the last, cheapest accepted) meets the budget at confidence
c without Bonferroni's c' = 1 - (1 - c) / K, which made every test stricter and picked
larger models.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcomp.errors import OnnxcompError
from onnxcomp.evaluate import Evaluator
from onnxcomp.stats import drop_bound, samples_needed, smallest_bound

# Finalist i: the cheapest candidate whose search drop is <= budget * MARGINS[i] (then
# the cost/risk front, then COST_STEPS); verified safest first. More cost builds, never
# confidence.
MARGINS = (1.0, 0.75, 0.5, 0.25)
COST_STEPS = (1.2, 1.5, 2.0)
MAX_FINALISTS = 12  # builds, never confidence: the sequence stops at its first rejection


@dataclass
class Finalist:
    trial: int
    search_drop: float
    verify_drop: float | None = None
    bound: float | None = None  # upper bound of the verification drop
    accepted: bool = False
    bytes: int | None = None
    deflate_bytes: int | None = None
    error: str | None = None
    distilled: bool = False  # built with --recover distill (auto/distill_rung.py)


@dataclass
class Verification:
    data: str
    samples: int
    confidence: float  # what the user asked for, for the chosen model
    test_confidence: float  # each finalist's test (fixed sequence: the same as confidence)
    method: str  # exact binomial | bootstrap | point estimate (custom metric)
    margin: float  # a finalist is accepted when its bound is <= this
    widened: bool = False  # the data could not resolve the budget: margin > budget
    samples_needed: int | None = None
    note: str = ""
    finalists: list[Finalist] = field(default_factory=list)


def plan(
    evaluator: Evaluator, budget: float, confidence: float, allow_small_data: bool, data: str
) -> Verification:
    """Say up front whether the verification data can resolve the budget at all."""
    if not 0.0 < confidence < 1.0:
        raise OnnxcompError(f"--confidence must be in (0, 1), got {confidence}")
    n = evaluator.samples
    test_conf = confidence  # fixed-sequence testing: no per-test correction
    metric = evaluator.metric_name
    binary = evaluator.binary
    if evaluator.custom is not None:
        return Verification(
            data, n, confidence, test_conf, "point estimate", budget,
            note="a custom metric gives no per-sample scores: judged on the point estimate",
        )  # fmt: skip
    method = "exact binomial" if binary else "bootstrap"
    floor = smallest_bound(n, metric, test_conf, binary=binary)
    v = Verification(data, n, confidence, test_conf, method, budget)
    if floor <= budget + 1e-12:
        return v
    v.samples_needed = samples_needed(budget, metric, test_conf, binary=binary)
    need = "no sample count can" if v.samples_needed is None else f"{v.samples_needed} would"
    v.note = (
        f"the verification data ({n} samples) cannot resolve a drop of {budget} in {metric} "
        f"at {confidence:.0%} confidence: its best bound is {floor:.4f}; {need}"
    )
    if not allow_small_data:
        raise OnnxcompError(
            v.note + " (give more data, --verify DATA or a larger --verify-fraction; or "
            "--allow-small-data to proceed with a widened margin)"
        )
    if floor == float("inf"):  # too few samples for any bound: the point estimate it is
        v.method = "point estimate"
        v.note += "; --allow-small-data: judging on the point estimate"
        return v
    v.widened, v.margin = True, floor
    v.note += f"; --allow-small-data: accepting bounds up to {floor:.4f}"
    return v


def pick_finalists(
    candidates: list[Any], budget: float, cost: Callable[[Any], Any] | None = None
) -> list[Any]:
    """Candidates come cheapest first; under each safety margin take the cheapest one not
    picked yet, so a lucky cheap candidate does not crowd out the safer runners-up.

    When the search part is too small to tell candidates apart (a 0/1 metric on a few
    dozen samples), the margins all pick near the cheapest; so the front of cost against
    risk fills the remaining places (each moved the outputs less than every cheaper
    one, evenly sampled), and with ``cost``, the cheapest fits costing COST_STEPS times
    the cheapest one (more bytes, more safety) where there is still room."""
    picked: list[Any] = []
    for frac in MARGINS:
        c = next(
            (c for c in candidates if c not in picked and _loss(c) <= budget * frac + 1e-9), None
        )
        if c is not None:
            picked.append(c)
    front, least = [], float("inf")
    for c in candidates:
        if _risk(c) < least:
            front.append(c)
            least = _risk(c)
    room = [c for c in front if c not in picked]
    take = min(MAX_FINALISTS - len(picked), len(room))
    if take > 0:
        picked += [room[round(i * (len(room) - 1) / max(take - 1, 1))] for i in range(take)]
    if cost is None or not candidates:
        return picked
    base = float(cost(candidates[0]))
    for step in COST_STEPS:
        if len(picked) >= MAX_FINALISTS:
            break
        c = next((c for c in candidates if c not in picked and cost(c) >= step * base), None)
        if c is not None:
            picked.append(c)
    return picked


def _risk(c: Any) -> float:
    """Its measured risk, or the sum of its layers' lone risks when larger: one trial's
    measurement on a small search part is noisy, the sum pools every layer's probes."""
    extra = getattr(c, "extra", None) or {}
    return max(float(getattr(c, "risk", _loss(c))), float(extra.get("predicted_risk", 0.0)))


def _loss(c: Any) -> float:
    return c.loss if c.loss is not None else c.drop


def judge(
    v: Verification,
    evaluator: Evaluator,
    finalists: list[Any],
    build: Callable[[Any, Path], None],
    out: Path,
    scratch: Path,
    *,
    seed: int = 0,
) -> Any | None:
    """Verify ``finalists`` (cheapest first, as picked) safest first and stop at the first
    rejection; the cheapest accepted one is moved to ``out`` and returned (None when the
    safest already fails)."""
    chosen, chosen_path = None, None

    for cand in _sequence(finalists):
        f = Finalist(cand.id, float(cand.drop), bytes=cand.bytes, deflate_bytes=cand.deflate_bytes)
        v.finalists.insert(0, f)  # reported cheapest first, like the candidates
        # Own folder, final file name: an external-data file keeps the name it is saved under.
        path = scratch / f"finalist_{cand.id}" / out.name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            build(cand, path)
            score = evaluator.score(path)
        except OnnxcompError as exc:
            f.error = str(exc)
            path.unlink(missing_ok=True)
            break  # an untested hypothesis ends the sequence like a rejected one
        if not judge_finalist(f, score, evaluator, v, seed):
            path.unlink(missing_ok=True)
            break
        if chosen_path is not None:
            _discard(chosen_path)
        chosen, chosen_path = cand, path
    if chosen_path is not None:
        _move(chosen_path, out)
    return chosen


def judge_finalist(f: Any, score: Any, evaluator: Any, v: Any, seed: int) -> bool:
    """Record ``score``'s drop and its one-sided bound on ``f``; whether it is within
    ``v.margin`` (the bound where the method has one, else the point estimate)."""
    bound = drop_bound(
        score.drops, evaluator.metric_name, v.test_confidence, seed=seed,
        binary=evaluator.binary,
    )  # fmt: skip
    f.verify_drop = float(score.drop)
    if bound is not None and v.method != "point estimate":
        f.bound = bound.upper
    limit = f.bound if f.bound is not None else f.verify_drop
    f.accepted = limit <= v.margin + 1e-12
    return bool(f.accepted)


def _sequence(finalists: list[Any]) -> list[Any]:
    """The test order, fixed before any verification score is seen. Safest first: by
    risk (the search drop, or for a 0/1 metric how far the outputs moved: a few changed
    samples on a small search part say less), then the dearer first; not the pick order
    (a pick under a tighter margin can be the riskier one). Each kept finalist is cheaper
    than every one before it: a dearer one could never be chosen over those, and its
    rejection would only end the sequence."""
    order, cheapest = [], float("inf")
    for c in sorted(finalists, key=lambda c: (_risk(c), -(c.bytes or 0))):
        if c.bytes is None or c.bytes < cheapest:
            order.append(c)
            cheapest = c.bytes if c.bytes is not None else cheapest
    return order


def _discard(model: Path) -> None:
    for p in model.parent.glob(model.name + "*"):  # the model and its external data
        p.unlink(missing_ok=True)


def _move(model: Path, out: Path) -> None:
    """The model (and an external-data file named after it) into ``out``'s folder."""
    for p in sorted(model.parent.glob(model.name + "*")):
        shutil.move(str(p), str(out.parent / p.name))
