"""Combine benchmark runs into one report (``python -m benchmarks --merge A.json B.json``).

A full run of every contender on every model takes longer than one sitting on a
2-core machine, so runs are split by model or contender. Per model, a later run's
contender entries replace an earlier run's, and its fp32 row (shown for reference) wins.
Speedups stay those measured within each contender's own run.
"""

from __future__ import annotations

import json
from pathlib import Path


def merge_runs(paths: list[Path]) -> dict:
    """One payload from several ``results.json`` files, later ones winning."""
    if not paths:
        raise SystemExit("--merge needs at least one results JSON")
    runs = [json.loads(p.read_text()) for p in paths]
    last = runs[-1]
    merged = {
        "command": " ; then ".join(r["command"] for r in runs),
        "date": " and ".join(dict.fromkeys(r["date"] for r in runs)),
        "machine": dict(last["machine"]),
        "quick": all(r.get("quick") for r in runs),
        "notes": [n for r in runs for n in r.get("notes", [])],
        "contenders": [],
        "descriptions": {},
        "config": last["config"],
        "results": [],
        "wall_s": round(sum(r.get("wall_s", 0.0) for r in runs), 1),
    }
    commits = [r["machine"].get("onnxcomp_commit") for r in runs]
    merged["machine"]["onnxcomp_commit"] = ", ".join(dict.fromkeys(c for c in commits if c))
    by_model: dict[str, dict] = {}
    for run in runs:
        merged["contenders"] += [c for c in run["contenders"] if c not in merged["contenders"]]
        merged["descriptions"].update(run.get("descriptions", {}))
        for entry in run["results"]:
            _merge_entry(by_model, entry)
    merged["results"] = list(by_model.values())
    # corpus entries: a later run's entry of a model replaces the earlier one whole (its
    # speed-ups are against its own fp32 timing)
    real = {e["model"]: e for r in runs for e in r.get("real") or []}
    if real:
        merged["real"] = list(real.values())
    pins = {k: v for r in runs for k, v in (r.get("peer_pins") or {}).items()}
    if pins:
        merged["peer_pins"] = pins
    merged["notes"].append(
        f"Merged from {len(runs)} runs: per model, each contender's figures come from the "
        "last run that measured it, and speedups are within that run."
    )
    return merged


def _merge_entry(by_model: dict[str, dict], entry: dict) -> None:
    name = entry["model"]
    if name not in by_model:
        by_model[name] = json.loads(json.dumps(entry))  # a deep copy
        return
    into = by_model[name]
    into["contenders"].update(entry.get("contenders", {}))
    for key, value in entry.items():
        if key not in ("contenders", "fp32"):
            into[key] = value
    if entry.get("fp32", {}).get("latency") or "fp32" not in into:
        into["fp32"] = entry["fp32"]
