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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcomp.auto import verify as verify_mod
from onnxcomp.auto.executor import SerialExecutor, TrialExecutor, process_pool, worker_cap
from onnxcomp.auto.report import write_reports
from onnxcomp.auto.search import (
    SearchState,
    bisect_threshold,
    fill_front,
    global_sweep,
    greedy_push,
    measure_sensitivity,
    predict_risk,
)
from onnxcomp.auto.space import build_space, deflate_size
from onnxcomp.auto.split import Split, split_data
from onnxcomp.auto.trials import TrialResult, init_worker, worker_evaluator
from onnxcomp.auto.verify import Verification
from onnxcomp.errors import OnnxcompError
from onnxcomp.evaluate import Evaluator, JudgeSpec
from onnxcomp.io import model_io, safe_io
from onnxcomp.io.data import InputSpec, input_specs, open_data
from onnxcomp.options import AutoOptions
from onnxcomp.pipeline.compress import CompressOptions, compress
from onnxcomp.recipe import save_recipe
from onnxcomp.runtime.latency import compare_latency, session

# The held-back share may grow to this when a third cannot resolve the budget.
MAX_VERIFY_FRACTION = 5 / 6


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
    options: AutoOptions | None = None,
    **kwargs: Any,
) -> AutoResult:
    """Search; options as an AutoOptions or keywords (``max_drop`` is required)."""
    start = time.monotonic()
    options = options or AutoOptions(**kwargs)
    src, out = Path(model), Path(output)
    _validate(src, out, options)
    calib, data, labels = options.calib, options.data, options.labels
    metric = JudgeSpec.of(options)
    objective, max_drop, recover = options.objective, options.max_drop, options.recover
    max_trials, time_limit = options.max_trials, options.time_limit
    workers = worker_cap(options.workers)
    executor: TrialExecutor | None = options.executor
    say = options.log or (lambda line: print(line, file=sys.stderr))
    # hardlinks, devices, the input's data, over-long names: all before the search
    sides = tuple(out.with_name(out.name + s) for s in SIDE_FILES)
    html = Path(options.html) if options.html else None
    safe_io.check_destination(out, src, also=sides)
    if html is not None:
        safe_io.check_report_target(html, "--html report", (src,))
        if html.resolve() in {p.resolve() for p in (out, *sides)}:
            raise OnnxcompError(f"{html}: --html would overwrite an output of this run")
    for source in (calib, data, options.verify):
        safe_io.regular_data(source)
    model_io.load(src)
    space = build_space(str(src), objective=objective, has_calib=calib is not None)
    if not space.layers or len(space.ladder) < 2:
        raise OnnxcompError(f"{src}: nothing to compress: no float weights to prune or quantize")
    space.base = CompressOptions(
        calib=str(calib) if isinstance(calib, os.PathLike) else calib, recover=recover,
        # the task travels with the recipe: compress's guards judge on it too
        task=options.task, task_arg=tuple(options.task_arg),
        metric_fn=options.metric_fn if isinstance(options.metric_fn, str) else None,
    )  # fmt: skip
    safe_io.sweep_stale(out.parent)  # what a killed run left behind
    # The held-back split lands here too (it needs the folder before the search starts).
    workdir = str(safe_io.make_temp_dir(out.parent, ".onnxcomp-auto-"))
    stage: Path | None = None
    html_stage: Path | None = None
    owned = False
    try:
        eval_data, verifier, plan = _holdout(
            src, data if data is not None else calib, options, workdir
        )
        if plan.note:
            say(plan.note)
        init_args = (str(src), eval_data, labels, metric)
        init_worker(*init_args)  # the main process evaluates too; fails early on bad data
        evaluator = worker_evaluator()
        if executor is None and options.engine == "ray":
            from onnxcomp.auto.ray_executor import RayExecutor

            owned = True
            executor = RayExecutor(init_args, space.base.calib, address=options.address)
        if executor is None:
            owned = True
            picklable = all(isinstance(x, (str, type(None))) for x in (eval_data, calib)) and (
                isinstance(metric, JudgeSpec)
                and (metric.metric_fn is None or isinstance(metric.metric_fn, str))
            )
            executor = (
                process_pool(workers, init_worker, init_args)
                if picklable and workers > 1
                else SerialExecutor()
            )
        # OUT, its recipe and reports are written here, then renamed into place as one unit.
        stage = safe_io.make_temp_dir(out.parent)
        deadline = start + time_limit if time_limit else float("inf")
        state = SearchState(
            space, max_drop, objective, executor, workdir, workers=workers,
            max_trials=max_trials, deadline=deadline,
        )  # fmt: skip
        state.log = say
        global_sweep(state)
        best_global = state.best()
        measure_sensitivity(state)
        bisect_threshold(state)
        greedy_push(state)
        fill_front(state)
        result = _finish(state, src, out, stage, verifier, plan, best_global, options)
        if owned:
            executor.shutdown(wait=True)
        shutil.rmtree(workdir, ignore_errors=True)
        result.metric = evaluator.metric_name
        result.baseline = evaluator.baseline
        result.seconds = time.monotonic() - start
        reports = write_reports(result, stage / out.name)
        result.reports = [str(out.with_name(p.name)) for p in reports]
        if html is not None:
            html_stage = _stage_html(result, html, out, stage, options.html_page)
        names = sorted(p.name for p in stage.iterdir() if p.name != safe_io.OWNER)
        with safe_io.signals_deferred():  # the model, its side files and the page together
            if html is not None and html_stage is not None and html_stage != stage:
                safe_io.publish(html_stage, html.parent, [html.name])
            safe_io.publish(stage, out.parent, names)
    finally:
        if html is not None and html_stage not in (None, stage):
            shutil.rmtree(html_stage, ignore_errors=True)
        if owned and executor is not None:
            executor.shutdown(wait=True)
        shutil.rmtree(workdir, ignore_errors=True)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    return result


SIDE_FILES = (".recipe.toml", ".report.json", ".report.md")


def _stage_html(
    result: AutoResult, html: Path, out: Path, stage: Path, page: Callable[..., Any] | None
) -> Path:
    """Render the HTML page (``page(result, path)``: the CLI gives report.auto_page's
    writer) into ``stage`` (or a stage beside it when it goes to another folder);
    returns that stage. Nothing is published yet."""
    if page is None:
        raise OnnxcompError("html needs html_page: a function(result, path) writing the page")
    result.reports.append(str(html))
    same = html.parent.resolve() == out.parent.resolve()
    folder = stage if same else safe_io.make_temp_dir(html.parent)
    page(result, folder / html.name)
    return folder


def _validate(src: Path, out: Path, options: AutoOptions) -> None:
    options.validate()
    if out.resolve() == src.resolve():
        raise OnnxcompError(f"{out}: output would overwrite the input model")
    if not out.parent.exists():
        raise OnnxcompError(f"{out.parent}: output folder does not exist")


def _holdout(
    src: Path, search_data: Any, options: AutoOptions, workdir: str
) -> tuple[Any, Evaluator, Verification]:
    """The search part, an evaluator on the verification part, and its plan."""
    specs = input_specs(model_io.load(src))
    labels = options.labels
    if options.verify is not None:
        return search_data, *_verifier(src, specs, options.verify, str(options.verify), options)
    fraction = options.verify_fraction or 1 / 3
    split = split_data(
        search_data, specs, Path(workdir) / "holdout", labels=labels, fraction=fraction,
        seed=options.seed,
    )  # fmt: skip
    verifier, plan = _verifier(src, specs, split.verify, _where(split), options, quiet=True)
    total = split.search_samples + split.verify_samples
    need = plan.samples_needed
    if (
        options.verify_fraction is None
        and need is not None
        and need > split.verify_samples
        and need <= MAX_VERIFY_FRACTION * total
    ):
        # Hold back what resolves the budget: a search on less data is noisier, but
        # only the verification's bound decides, and a widened margin decides nothing.
        split = split_data(
            search_data, specs, Path(workdir) / "holdout", labels=labels, fraction=fraction,
            seed=options.seed, at_least=need,
        )  # fmt: skip
        verifier, plan = _verifier(src, specs, split.verify, _where(split), options, quiet=True)
    if plan.samples_needed is not None and not options.allow_small_data:
        verify_mod.plan(verifier, options.max_drop, options.confidence, False, plan.data)
    return split.search, verifier, plan


def _where(split: Split) -> str:
    where = f"held back {split.verify_samples} of {split.search_samples + split.verify_samples}"
    return where + " samples" + (" (stratified by label)" if split.stratified else "")


def _verifier(
    src: Path,
    specs: list[InputSpec],
    verify: Any,
    where: str,
    options: AutoOptions,
    *,
    quiet: bool = False,
) -> tuple[Evaluator, Verification]:
    """An evaluator on the held-back data and its plan (``quiet``: a plan that cannot
    resolve the budget is returned, as if --allow-small-data, for the caller to decide)."""
    verifier = Evaluator(str(src), open_data(verify, specs, labels=options.labels),
                         metric=JudgeSpec.of(options))  # fmt: skip
    allow = options.allow_small_data or quiet
    plan = verify_mod.plan(verifier, options.max_drop, options.confidence, allow, where)
    return verifier, plan


def _finish(
    state: SearchState,
    src: Path,
    out: Path,
    stage: Path,
    verifier: Evaluator,
    plan: Verification,
    best_global: TrialResult | None,
    options: AutoOptions,
) -> AutoResult:
    """Judge the finalists on the held-back data; the winner and its recipe are written
    into ``stage``."""
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
    for c in candidates:
        predicted = predict_risk(state, c)
        if predicted is not None:
            c.extra["predicted_risk"] = predicted
    if state.objective == "latency":
        finalists = _by_latency(state, src, candidates[:3], result)
    else:
        finalists = verify_mod.pick_finalists(candidates, state.max_drop, lambda r: r.bytes or 0)
    result.verification = plan

    def build(cand: TrialResult, path: Path) -> None:
        compress(src, path, state.space.to_options(cand.config))

    staged = stage / out.name
    scratch = Path(state.workdir)
    seed = options.seed
    cand = verify_mod.judge(plan, verifier, finalists, build, staged, scratch, seed=seed)
    chosen = state.space.to_options(cand.config) if cand is not None else None
    rung = _distill_rung(state, src, verifier, plan, staged, scratch, options)
    if rung is not None:
        cand, chosen = rung
    if cand is not None and chosen is not None:
        result.found, result.chosen, result.output = True, cand, str(out)
        recipe = out.name + ".recipe.toml"
        save_recipe(chosen, stage / recipe, base_dir=out.parent)
        result.recipe = str(out.with_name(recipe))
        return result
    for leftover in stage.glob(out.name + "*"):  # a rejected finalist's files
        leftover.unlink()
    result.chosen = min(
        (r for r in state.results if r.ok and r.drop is not None),
        key=lambda r: r.drop if r.drop is not None else float("inf"),
        default=None,
    )
    return result


def _distill_rung(
    state: SearchState, src: Path, verifier: Evaluator, plan: Verification, staged: Path,
    scratch: Path, options: AutoOptions,
) -> tuple[TrialResult, CompressOptions] | None:  # fmt: skip
    """A finalist that missed the budget, distilled and judged again (distill_rung.py)."""
    from onnxcomp.auto import distill_rung

    reason = distill_rung.why_not(options)
    if reason == "off":
        return None
    if reason is not None:
        state.log(f"distill rung skipped: {reason}")
        return None
    calib = state.space.base.calib

    def options_of(trial: TrialResult) -> CompressOptions:
        return distill_rung.distilled(state.space.to_options(trial.config), calib, options.seed)

    got = distill_rung.run_rung(
        plan, verifier, {r.id: r for r in state.results}, options_of,
        lambda opts, path: compress(src, path, opts), staged, scratch, seed=options.seed,
    )  # fmt: skip
    done = next((f for f in plan.finalists if f.distilled), None)
    if done is not None:
        state.log(
            f"distill rung: trial {done.trial} distilled, held-back drop "
            f"{done.verify_drop}, {'accepted' if done.accepted else 'still over the budget'}"
            + (f" ({done.error})" if done.error else "")
        )
    if got is not None:
        got[0].extra["distilled"] = True
    return got


def _by_latency(state, src: Path, cands: list[TrialResult], result: AutoResult):
    """Build the top candidates again and time them against the original, interleaved."""
    if not cands:
        return cands
    paths = []
    for c in cands:
        p = Path(state.workdir) / f"latency_{c.id}.onnx"
        compress(src, p, state.space.to_options(c.config))
        paths.append(p)
    from onnxcomp.io.data import input_specs, synthetic

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
