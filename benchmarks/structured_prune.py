"""Structured channel pruning on the real corpus: task metric and latency per ratio.

    python -m benchmarks.structured_prune minilm-l3 0.25 0.5 [--int8] [--runs 200]
        [--recipe NAME=FILE]...

For each ratio: ``onnxcomp compress --prune-channels R --calib <corpus calib>`` (and, when
asked, ``--quantize int8`` on that pruned file), the corpus task metric, the seconds each
compression took and the parameter/MAC note, and latency of every
model against the unpruned fp32 original in one process, sessions alternated
(``benchmarks.measure.latency``), 1 thread, on the first evaluation batch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.corpus import prepare, registry
from benchmarks.measure import latency
from onnxcomp import compress
from onnxcomp.recipe import load_recipe


def _feed(folder: Path) -> dict[str, np.ndarray]:
    first = sorted(folder.glob("*.npz"))[0]
    with np.load(first) as data:
        return {k: data[k] for k in data.files}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("ratios", nargs="*", type=float)
    parser.add_argument(
        "--recipe", action="append", default=[], help="NAME=FILE: also a recipe's result"
    )
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--budget", type=float, default=240.0)
    parser.add_argument(
        "--tile", type=int, default=0, help="text models: also time a batch of 8 x TILE tokens"
    )
    args = parser.parse_args()
    prepared = prepare(args.model)
    real = registry()[args.model]
    out_dir = Path(tempfile.mkdtemp(prefix="structured-"))
    paths = {"fp32": prepared.model}
    made: dict[str, dict] = {}  # seconds to compress, the parameter/MAC note
    recipes = dict(r.split("=", 1) for r in args.recipe)
    plans: list[tuple[float | str, str | None]] = [(r, None) for r in args.ratios]
    plans += [(name, None) for name in recipes]
    if args.int8:
        plans += [(0.0, "int8"), *[(r, "int8") for r, _ in list(plans)]]
    for ratio, quantize in plans:
        label = ratio if isinstance(ratio, str) else f"prune{ratio:g}"
        name = label + ("+int8" if quantize else "")
        path = out_dir / f"{name}.onnx"
        pruned = out_dir / f"{label}.onnx"
        if quantize and pruned.exists():  # int8 on the pruned file: no second pruning run
            result = compress(pruned, path, calib=str(prepared.calib), quantize=quantize,
                              measure=False)  # fmt: skip
        elif isinstance(ratio, str):
            options = load_recipe(recipes[ratio])
            options.quantize, options.measure = quantize, False
            options.calib = str(prepared.calib)
            if quantize:
                options.layers = {k: replace(v, precision=None) for k, v in options.layers.items()}
            result = compress(prepared.model, path, options)
        else:
            kwargs = {"calib": str(prepared.calib), "quantize": quantize, "measure": False}
            if ratio:
                kwargs["prune_channels"] = ratio
            result = compress(prepared.model, path, **kwargs)
        paths[name] = path
        cost = next((n for n in result.notes if n.startswith("channel pruning:")), "")
        made[name] = {"compress_s": round(result.seconds, 1), "cost": cost}
    rows = {}
    for name, path in paths.items():
        score = real.score(path, prepared, 1)
        rows[name] = {"metric": score.metric, "value": score.value, "bytes": path.stat().st_size}
        rows[name].update(made.get(name, {}))
    feeds = {"first eval sample": _feed(prepared.eval)}
    if args.tile:
        feeds[f"8 x {args.tile} tokens"] = {
            k: np.tile(v, (8, -(-args.tile // v.shape[1])))[:, : args.tile]
            for k, v in feeds["first eval sample"].items()
        }
    for label, feed in feeds.items():
        times = latency(paths, feed, threads=1, max_runs=args.runs, budget_s=args.budget)
        base = times["fp32"]["median_ms"]
        for name in paths:
            rows[name][label] = {
                **times[name],
                "speedup_vs_fp32": base / times[name]["median_ms"],
            }
    print(json.dumps({"model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
