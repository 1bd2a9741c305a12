"""One benchmark run: build each model, compress it with every contender, measure.

Per model: every contender compresses in its own child process (time, peak memory,
error), then all outputs are measured together in this process against fp32 —
fidelity on the evaluation set and latency alternated at each thread count — so
every ratio comes from one run. Results are written after each model, so a run that
dies late still leaves what it measured.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import measure, zoo
from benchmarks.contenders import CONTENDERS
from benchmarks.validity import validity
from benchmarks.worker import ROW_KEYS, one_line, run_child

logger = logging.getLogger("benchmarks")


@dataclass
class RunConfig:
    models: list[str]
    contenders: list[str]
    quick: bool = False
    cache: Path = Path("benchmarks/.cache")
    out: Path = Path("benchmarks/out")
    threads: tuple[int, ...] = (1, 2)
    max_runs: int = 100
    budget_s: float = 20.0  # per model and thread count, all sessions together
    timeout_s: float = 1800.0  # per compression
    eval_limit: int | None = None  # overrides the zoo's evaluation sample count
    calib_limit: int | None = None
    extended_models: tuple[str, ...] | None = None  # where extended contenders run; None: all
    auto_trials: int | None = None  # overrides the budget's max_trials
    auto_time_s: float | None = None  # overrides the budget's time limit
    extra: dict = field(default_factory=dict)


def _subset(src: Path, dst: Path, count: int) -> Path:
    """The first ``count`` samples of every array: the same calibration set for all."""
    with np.load(src) as data:
        np.savez(dst, **{k: data[k][:count] for k in data.files})
    return dst


def _mb(n: int) -> float:
    return round(n / 2**20, 3)


def run_model(name: str, cfg: RunConfig) -> dict:
    spec = zoo.MODELS[name]
    entry: dict = {"model": name, "kind": spec.kind, "source": spec.source, "inputs": spec.inputs}
    start = time.perf_counter()
    try:
        built = zoo.build(name, cfg.cache)
    except Exception as exc:
        logger.warning("%s: cannot build: %s", name, one_line(exc))
        entry["skipped"] = f"model not built: {one_line(exc)}"
        return entry
    entry["build_s"] = round(time.perf_counter() - start, 1)
    which = 1 if cfg.quick else 0
    calib_n = cfg.calib_limit or spec.calib_n[which]
    eval_n = cfg.eval_limit or spec.eval_n[which]
    folder = cfg.out / name
    folder.mkdir(parents=True, exist_ok=True)
    calib = _subset(built.calib, folder / "calib.npz", calib_n)
    fp32_bytes = built.model.stat().st_size
    entry.update(calib_samples=calib_n, output=built.output, fp32={"bytes": fp32_bytes})
    rows: dict[str, dict] = {}
    produced: dict[str, Path] = {}
    for cname in cfg.contenders:
        contender = CONTENDERS[cname]
        limited = contender.extended and cfg.extended_models is not None
        if limited and name not in cfg.extended_models:
            entry.setdefault("not_run", []).append(cname)
            continue
        why = contender.unavailable(built.model)
        if contender.objective and spec.budget is None:
            why = "no auto budget set for this model"
        if why:
            rows[cname] = {"status": "skipped", "error": why}
            continue
        options = _auto_options(spec.budget, built, cfg) if contender.objective else None
        if options:
            entry["auto_budget"] = spec.budget.describe()
        out = folder / f"{cname}.onnx"
        logger.info("%s: compressing with %s", name, cname)
        result = run_child(
            cname, built.model, out, calib, timeout=cfg.timeout_s,
            log=folder / f"{cname}.log", options=options,
        )  # fmt: skip
        row = {k: result.get(k) for k in ROW_KEYS}
        extra = result.get("extra") or {}
        if extra:
            row["extra"] = extra
        if result.get("ok"):
            size = _file_bytes(out)
            row.update(status="ok", bytes=size, size_ratio=size / fp32_bytes)
            row["valid"] = validity(out, built.model, _feed(built))
            produced[cname] = out
        else:
            status = "no fit" if extra.get("found") is False else "failed"
            row.update(status=status, error=result.get("error", "unknown error"))
            logger.warning("%s: %s %s: %s", name, cname, status, row["error"])
        rows[cname] = row
        glob = Path(extra["global_model"]) if extra.get("global_model") else None
        if glob is not None and glob.exists():  # auto's best global setting, measured too
            size = _file_bytes(glob)
            gname = f"{cname} (best global)"
            rows[gname] = {"status": "ok", "bytes": size, "size_ratio": size / fp32_bytes}
            rows[gname]["global_of"] = cname
            produced[gname] = glob
    logger.info("%s: fidelity of %d models on %d samples", name, len(produced), eval_n)
    fid = measure.fidelity(
        built.model,
        produced,
        built.eval,
        output=built.output,
        labels=built.labels,
        kind=built.kind,
        limit=eval_n,
    )
    entry["fp32"]["accuracy"] = fid.pop("")["accuracy"]
    entry["eval_samples"] = eval_n
    for cname, res in fid.items():
        if "error" in res:
            rows[cname].update(status="failed", error=res["error"])
            produced.pop(cname)
        else:
            rows[cname]["fidelity"] = res
    _latencies(entry, rows, built, produced, cfg)
    entry["contenders"] = rows
    entry["total_s"] = round(time.perf_counter() - start, 1)
    return entry


def _feed(built: zoo.Built) -> dict:
    """The first evaluation sample, as the latency runs use it."""
    return measure.eval_batches(built.eval, measure.session(built.model, 1), 1, None)[0][0]


def _auto_options(budget: zoo.AutoBudget, built: zoo.Built, cfg: RunConfig) -> dict:
    """The auto contenders' keywords: the model's budget, searched on calibration data."""
    which = 1 if cfg.quick else 0
    return {
        "metric": budget.metric,
        "max_drop": budget.max_drop,
        "labels": built.labels if budget.metric == "accuracy" else None,
        "max_trials": cfg.auto_trials or budget.trials[which],
        "time_limit": cfg.auto_time_s or budget.time_limit[which],
    }


def _latencies(entry: dict, rows: dict, built: zoo.Built, produced: dict, cfg: RunConfig) -> None:
    if not cfg.threads:
        return
    batches = measure.eval_batches(built.eval, measure.session(built.model, 1), 1, None)
    feed = batches[0][0]
    paths = {"fp32": built.model, **produced}
    entry["fp32"]["latency"] = {}
    for threads in cfg.threads:
        logger.info("%s: latency at %d thread(s)", built.name, threads)
        lat = measure.latency(
            paths, feed, threads=threads, max_runs=cfg.max_runs, budget_s=cfg.budget_s
        )
        base = lat.pop("fp32")
        entry["fp32"]["latency"][str(threads)] = base
        for cname, res in lat.items():
            if "error" in res:
                rows[cname].update(status="failed", error=res["error"])
                continue
            res["speedup"] = base["median_ms"] / res["median_ms"]
            rows[cname].setdefault("latency", {})[str(threads)] = res


def _file_bytes(path: Path) -> int:
    from onnxcomp.io.model_io import file_size

    return file_size(path)


def run(cfg: RunConfig, on_model: Callable[[dict], None] | None = None) -> list[dict]:
    """Every selected model in turn; ``on_model`` sees the results after each one."""
    results = []
    for name in cfg.models:
        t0 = time.perf_counter()
        results.append(run_model(name, cfg))
        logger.info("%s: done in %.0f s", name, time.perf_counter() - t0)
        if on_model:
            on_model(results[-1])
    return results


def dump(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)
