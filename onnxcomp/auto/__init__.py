"""``auto``: the most compressed model within an accuracy budget, with no hand tuning.

Writes OUT, OUT.recipe.toml (replayable with ``compress --recipe``), OUT.report.json
and OUT.report.md. When no compressed configuration fits, OUT is not written, the
reports still are, and the result says so (the CLI exits 1).

The search measures on one part of the data and the finalists are judged on a held-back
part (``--verify DATA``, else a seeded split of the search data): see auto/verify.py.
Activation ranges are calibrated on all of ``--calib`` (so the recipe replays byte for
byte); to keep the verification samples out of calibration too, give ``--verify``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcomp import model as model_io
from onnxcomp.auto import verify as verify_mod
from onnxcomp.auto.report import write_reports
from onnxcomp.auto.search import (
    SearchState,
    bisect_threshold,
    global_sweep,
    greedy_push,
    measure_sensitivity,
)
from onnxcomp.auto.space import build_space, deflate_size
from onnxcomp.auto.trials import TrialResult, init_worker
from onnxcomp.auto.verify import Verification
from onnxcomp.compress import CompressOptions, compress
from onnxcomp.data import input_specs, open_data
from onnxcomp.errors import OnnxcompError
from onnxcomp.evaluate import Evaluator
from onnxcomp.executor import SerialExecutor, TrialExecutor, process_pool
from onnxcomp.recipe import save_recipe
from onnxcomp.runtime.latency import compare_latency, session
from onnxcomp.split import split_data

OBJECTIVES = ("size", "latency")


@dataclass
class AutoResult:
    model: str
    output: str | None
    objective: str
    max_drop: float
    metric: str
    baseline: float
    found: bool
    chosen: TrialResult | None
    best_global: TrialResult | None
    original_bytes: int
    original_deflate_bytes: int
    trials: list[TrialResult] = field(default_factory=list)
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)
    ladder: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    recipe: str | None = None
    reports: list[str] = field(default_factory=list)
    verification: Verification | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def auto(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    calib: Any = None,
    data: Any = None,
    labels: str | None = None,
    max_drop: float,
    objective: str = "size",
    metric: Any = None,
    max_trials: int = 60,
    time_limit: float | None = None,
    workers: int = 2,
    executor: TrialExecutor | None = None,
    recover: str | None = None,
    verify: Any = None,
    verify_fraction: float = 1 / 3,
    confidence: float = 0.95,
    allow_small_data: bool = False,
    seed: int = 0,
    log=None,
) -> AutoResult:
    start = time.monotonic()
    src, out = Path(model), Path(output)
    _validate(src, out, objective, max_drop, max_trials, calib, data, metric, recover)
    say = log or (lambda line: print(line, file=sys.stderr))
    model_io.load(src)
    space = build_space(str(src), objective=objective, has_calib=calib is not None)
    space.base = CompressOptions(
        calib=str(calib) if isinstance(calib, os.PathLike) else calib, recover=recover
    )
    workdir = tempfile.mkdtemp(prefix=".onnxcomp-auto-", dir=out.parent)
    try:
        eval_data, verifier, plan = _holdout(
            src, data if data is not None else calib, verify, labels, metric, verify_fraction,
            seed, workdir, max_drop, confidence, allow_small_data,
        )  # fmt: skip
        if plan.note:
            say(plan.note)
        init_args = (str(src), eval_data, labels, metric)
        init_worker(*init_args)  # the main process evaluates too; fails early on bad data
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    from onnxcomp.auto.trials import _State

    evaluator = _State.evaluator
    assert evaluator is not None
    owned = executor is None
    if executor is None:
        picklable = all(isinstance(x, (str, type(None))) for x in (eval_data, calib)) and (
            metric is None or isinstance(metric, str)
        )
        executor = (
            process_pool(workers, init_worker, init_args)
            if picklable and workers > 1
            else SerialExecutor()
        )
    deadline = start + time_limit if time_limit else float("inf")
    state = SearchState(
        space, max_drop, objective, executor, workdir, workers=workers,
        max_trials=max_trials, deadline=deadline,
    )  # fmt: skip
    state.log = say
    try:
        global_sweep(state)
        best_global = state.best()
        measure_sensitivity(state)
        bisect_threshold(state)
        greedy_push(state)
        result = _finish(state, src, out, verifier, plan, best_global, seed)
    finally:
        if owned:
            executor.shutdown(wait=True)
        shutil.rmtree(workdir, ignore_errors=True)
    result.metric = evaluator.metric_name
    result.baseline = evaluator.baseline
    result.seconds = time.monotonic() - start
    result.reports = [str(p) for p in write_reports(result, out)]
    return result


def _validate(src, out, objective, max_drop, max_trials, calib, data, metric, recover) -> None:
    if objective not in OBJECTIVES:
        raise OnnxcompError(f"--objective must be size or latency, got {objective!r}")
    if not 0 <= max_drop <= 1:
        raise OnnxcompError(f"--max-drop must be in [0, 1], got {max_drop}")
    if max_trials < 1:
        raise OnnxcompError(f"--max-trials must be >= 1, got {max_trials}")
    if objective == "latency" and calib is None:
        raise OnnxcompError("--objective latency needs --calib: only full int8 runs faster")
    if recover is not None and calib is None:
        raise OnnxcompError(f"--recover {recover} needs calibration data: give --calib DATA")
    if calib is None and data is None:
        raise OnnxcompError("auto needs data to measure on: give --calib or --data")
    if out.resolve() == src.resolve():
        raise OnnxcompError(f"{out}: output would overwrite the input model")
    if not out.parent.exists():
        raise OnnxcompError(f"{out.parent}: output folder does not exist")


def _holdout(src, search_data, verify, labels, metric, fraction, seed, workdir, max_drop,
             confidence, allow_small_data):  # fmt: skip
    """The search part, an evaluator on the verification part, and its plan."""
    specs = input_specs(model_io.load(src))
    if verify is None:
        split = split_data(
            search_data, specs, Path(workdir) / "holdout", labels=labels, fraction=fraction,
            seed=seed,
        )  # fmt: skip
        search_data, verify = split.search, split.verify
        where = f"held back {split.verify_samples} of {split.search_samples + split.verify_samples}"
        where += " samples" + (" (stratified by label)" if split.stratified else "")
    else:
        where = str(verify)
    source = open_data(verify, specs, labels=labels)
    verifier = Evaluator(str(src), source, metric=metric)
    plan = verify_mod.plan(verifier, max_drop, confidence, allow_small_data, where)
    return search_data, verifier, plan


def _finish(
    state: SearchState, src: Path, out: Path, verifier, plan, best_global, seed: int
) -> AutoResult:
    result = AutoResult(
        model=str(src), output=None, objective=state.objective, max_drop=state.max_drop,
        metric="", baseline=0.0, found=False, chosen=None, best_global=best_global,
        original_bytes=model_io.file_size(src), original_deflate_bytes=deflate_size(src),
        trials=state.results, ladder=[s.label for s in state.space.ladder],
        sensitivity={
            name: {state.space.ladder[r].label: d for r, d in sorted(v.items())}
            for name, v in state.sensitivity.items()
        },
    )  # fmt: skip
    candidates = sorted(
        (r for r in state.results if state.fits(r)), key=lambda r: (state.cost(r), r.drop, r.id)
    )
    if state.objective == "latency":
        finalists = _by_latency(state, src, candidates[:3], result)
    else:
        finalists = verify_mod.pick_finalists(candidates, state.max_drop)
    result.verification = plan

    def build(cand: TrialResult, path: Path) -> None:
        compress(src, path, state.space.to_options(cand.config))

    scratch = Path(state.workdir)
    cand = verify_mod.judge(plan, verifier, finalists, build, out, scratch, seed=seed)
    if cand is not None:
        result.found, result.chosen, result.output = True, cand, str(out)
        recipe = out.with_name(out.name + ".recipe.toml")
        result.recipe = str(save_recipe(state.space.to_options(cand.config), recipe))
        return result
    result.chosen = min(
        (r for r in state.results if r.ok and r.drop is not None),
        key=lambda r: r.drop,
        default=None,
    )
    return result


def _by_latency(state, src: Path, cands: list[TrialResult], result: AutoResult):
    """Build the top candidates again and time them against the original, interleaved."""
    if not cands:
        return cands
    paths = []
    for c in cands:
        p = Path(state.workdir) / f"latency_{c.id}.onnx"
        compress(src, p, state.space.to_options(c.config))
        paths.append(p)
    from onnxcomp.data import input_specs, synthetic

    feed = next(iter(synthetic(input_specs(model_io.load(src)), batches=1))).feed
    sessions = [session(src)] + [session(p) for p in paths]
    stats = compare_latency(sessions, feed, runs=100, warmup=5)
    result.latency_ms["original"] = stats[0].median_ms
    for c, s in zip(cands, stats[1:], strict=True):
        c.extra["latency_ms"] = s.median_ms
        result.latency_ms[f"trial_{c.id}"] = s.median_ms
    faster = [c for c in cands if c.extra["latency_ms"] < stats[0].median_ms]
    faster.sort(key=lambda c: c.extra["latency_ms"])
    # Timings within 3% are noise: then the one with the most int8 (the proxy) wins.
    if faster:
        close = [c for c in faster if c.extra["latency_ms"] <= faster[0].extra["latency_ms"] * 1.03]
        pick = min(close, key=lambda c: (state.cost(c), c.id))
        faster.remove(pick)
        faster.insert(0, pick)
    return faster
