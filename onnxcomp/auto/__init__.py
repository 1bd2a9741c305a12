"""``auto``: the most compressed model within an accuracy budget, with no hand tuning.

Writes OUT, OUT.recipe.toml (replayable with ``compress --recipe``), OUT.report.json
and OUT.report.md. When no compressed configuration fits, OUT is not written, the
reports still are, and the result says so (the CLI exits 1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcomp import model_io
from onnxcomp.auto.report import write_reports
from onnxcomp.auto.search import (
    SearchState,
    bisect_threshold,
    global_sweep,
    greedy_push,
    measure_sensitivity,
)
from onnxcomp.auto.space import build_space, deflate_size
from onnxcomp.auto.trials import TrialResult, init_worker, worker_evaluator
from onnxcomp.compress import CompressOptions, compress
from onnxcomp.errors import OnnxcompError
from onnxcomp.executor import SerialExecutor, TrialExecutor, process_pool
from onnxcomp.options import AutoOptions
from onnxcomp.recipe import save_recipe
from onnxcomp.runtime.latency import compare_latency, session


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

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def auto(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: AutoOptions | None = None,
    **kwargs: Any,
) -> AutoResult:
    """Search; options as an AutoOptions or keywords (``max_drop`` is required)."""
    start = time.monotonic()
    options = options or AutoOptions(**kwargs)
    src, out = Path(model), Path(output)
    _validate(src, out, options)
    calib, data, labels, metric = options.calib, options.data, options.labels, options.metric
    objective, max_drop, recover = options.objective, options.max_drop, options.recover
    max_trials, time_limit, workers = options.max_trials, options.time_limit, options.workers
    executor: TrialExecutor | None = options.executor
    log = options.log
    model_io.load(src)
    space = build_space(str(src), objective=objective, has_calib=calib is not None)
    space.base = CompressOptions(
        calib=str(calib) if isinstance(calib, os.PathLike) else calib, recover=recover
    )
    eval_data = data if data is not None else calib
    init_args = (str(src), eval_data, labels, metric)
    init_worker(*init_args)  # the main process evaluates too; fails early on bad data
    evaluator = worker_evaluator()
    owned = executor is None
    if executor is None and options.engine == "ray":
        from onnxcomp.auto.ray_executor import RayExecutor

        executor = RayExecutor(init_args, space.base.calib, address=options.address)
    if executor is None:
        picklable = all(isinstance(x, (str, type(None))) for x in (eval_data, calib)) and (
            metric is None or isinstance(metric, str)
        )
        executor = (
            process_pool(workers, init_worker, init_args)
            if picklable and workers > 1
            else SerialExecutor()
        )
    workdir = tempfile.mkdtemp(prefix=".onnxcomp-auto-", dir=out.parent)
    deadline = start + time_limit if time_limit else float("inf")
    state = SearchState(
        space, max_drop, objective, executor, workdir, workers=workers,
        max_trials=max_trials, deadline=deadline,
    )  # fmt: skip
    if log is not None:
        state.log = log
    try:
        global_sweep(state)
        best_global = state.best()
        measure_sensitivity(state)
        bisect_threshold(state)
        greedy_push(state)
        result = _finish(state, src, out, evaluator, best_global)
    finally:
        if owned:
            executor.shutdown(wait=True)
        shutil.rmtree(workdir, ignore_errors=True)
    result.metric = evaluator.metric_name
    result.baseline = evaluator.baseline
    result.seconds = time.monotonic() - start
    result.reports = [str(p) for p in write_reports(result, out)]
    return result


def _validate(src: Path, out: Path, options: AutoOptions) -> None:
    options.validate()
    if out.resolve() == src.resolve():
        raise OnnxcompError(f"{out}: output would overwrite the input model")
    if not out.parent.exists():
        raise OnnxcompError(f"{out.parent}: output folder does not exist")


def _finish(state: SearchState, src: Path, out: Path, evaluator, best_global) -> AutoResult:
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
        candidates = _by_latency(state, src, candidates[:3], result)
    for cand in candidates:
        options = state.space.to_options(cand.config)
        compress(src, out, options)
        score = evaluator.score(out)
        if score.drop <= state.max_drop + 1e-9:  # verified on the evaluation data
            cand.value, cand.drop = score.value, score.drop
            result.found, result.chosen, result.output = True, cand, str(out)
            recipe = out.with_name(out.name + ".recipe.toml")
            result.recipe = str(save_recipe(options, recipe))
            return result
        out.unlink()
    result.chosen = min(
        (r for r in state.results if r.ok and r.drop is not None),
        key=lambda r: r.drop if r.drop is not None else float("inf"),
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
