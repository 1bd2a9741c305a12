"""Latency of already-built model files, sessions alternated in one process.

    python -m benchmarks.latency_pairs FEED.npz NAME=PATH ... [--threads 1 2] [--budget S]

Prints one JSON line per thread count: median ms per name and the ratio to the first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks import measure


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("feed", type=Path)
    p.add_argument("models", nargs="+")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--budget", type=float, default=30.0)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    paths = {m.split("=", 1)[0]: Path(m.split("=", 1)[1]) for m in args.models}
    first = next(iter(paths.values()))
    names = [i.name for i in measure.session(first, 1).get_inputs()]
    with np.load(args.feed) as data:
        feed = {n: data[n] for n in names}
    for threads in args.threads:
        lat = measure.latency(
            paths, feed, threads=threads, max_runs=args.runs, budget_s=args.budget
        )
        base = lat[next(iter(paths))]["median_ms"]
        row = {
            name: {"ms": round(r["median_ms"], 3), "x_fp32_time": round(r["median_ms"] / base, 3)}
            for name, r in lat.items()
            if "median_ms" in r
        }
        print(json.dumps({"threads": threads, **row}), flush=True)


if __name__ == "__main__":
    main()
