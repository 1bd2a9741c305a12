"""auto's distillation rung (``auto --recover distill``): a finalist that missed the budget
on the held-back data is distilled (compress ``--recover distill``) and judged again.

Trials stay plain (distilling each would cost minutes a trial). Verification stops at
its first rejected finalist; that one, cheaper than every accepted one, is the one worth
training. Its distilled build is judged on the same held-back data by the same bound
and accepted only within the budget. The training reads ``--calib`` only, so the
held-back data must not come out of it (``--data`` or ``--verify`` give it apart); the
recipe records recover = "distill" with its steps, rate and seed, and ``compress
--recipe`` rebuilds the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from onnxcomp.auto.verify import Finalist, Verification, judge_finalist
from onnxcomp.errors import OnnxcompError
from onnxcomp.evaluate import Evaluator
from onnxcomp.options import CompressOptions


def distilled(options: CompressOptions, calib: Any, seed: int) -> CompressOptions:
    """The trial's options with distillation on (measure off: the replay is exact)."""
    return replace(options, recover="distill", calib=calib, seed=seed, measure=False)


def why_not(options: Any) -> str | None:
    """Why the rung cannot run for these auto options, or None when it can."""
    if options.recover != "distill":
        return "off"
    if options.calib is None:
        return "--recover distill needs --calib"
    if options.data is None and options.verify is None:
        return (
            "the held-back data is split from --calib, which distillation trains on: give "
            "--data or --verify so the distilled finalist is judged on samples it never saw"
        )
    return None


def run_rung(
    plan: Verification,
    verifier: Evaluator,
    trials: dict[int, Any],
    options_of: Callable[[Any], CompressOptions],
    build: Callable[[CompressOptions, Path], object],
    out: Path,
    scratch: Path,
    *,
    seed: int,
) -> tuple[Any, CompressOptions] | None:
    """Distill the first rejected finalist; (trial, its options) when accepted, its file
    moved to ``out``."""
    rejected = next(
        (f for f in plan.finalists if not f.accepted and f.error is None and f.verify_drop
         is not None),
        None,
    )  # fmt: skip
    if rejected is None or rejected.trial not in trials:
        return None
    cand = trials[rejected.trial]
    options = options_of(cand)
    path = scratch / f"distilled_{cand.id}" / out.name
    path.parent.mkdir(parents=True, exist_ok=True)
    f = Finalist(cand.id, float(cand.drop), bytes=cand.bytes, deflate_bytes=cand.deflate_bytes)
    f.distilled = True
    plan.finalists.insert(0, f)
    try:
        build(options, path)
        score = verifier.score(path)
    except OnnxcompError as exc:
        f.error = str(exc)
        return None
    if not judge_finalist(f, score, verifier, plan, seed):
        return None
    f.bytes = path.stat().st_size
    for old in out.parent.glob(out.name + "*"):  # the plain finalist it replaces
        old.unlink()
    for p in sorted(path.parent.glob(path.name + "*")):
        p.rename(out.parent / p.name)
    return cand, options
