"""Weight-only int8 (or full int8) speed against fp32 on the zoo models, sessions alternated.

    python -m benchmarks.weights_speed [MODEL ...] [--budget S] [--mode weights|int8]

Prints one JSON line per model: file bytes ratio and median latency ratio (fp32 / ours).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import measure, zoo
from onnxcomp.pipeline.compress import compress

HERE = Path(__file__).parent


def run(name: str, cache: Path, budget: float, threads: int, mode: str = "weights") -> dict:
    built = zoo.build(name, cache)
    out = built.model.parent / f"{mode}_only.onnx"
    calib = str(built.calib) if mode == "int8" else None
    result = compress(built.model, out, quantize=mode, calib=calib, progress=False)
    ref = measure.session(built.model, threads)
    feed = measure.eval_batches(built.eval, ref, 1, built.labels)[0][0]
    lat = measure.latency(
        {"fp32": built.model, "ours": out}, feed, threads=threads, max_runs=400,
        budget_s=budget,
    )  # fmt: skip
    return {
        "model": name,
        "mode": mode,
        "size_ratio": round(result.size_ratio, 4),
        "fp32_ms": round(lat["fp32"]["median_ms"], 3),
        "ours_ms": round(lat["ours"]["median_ms"], 3),
        "speed": round(lat["fp32"]["median_ms"] / lat["ours"]["median_ms"], 3),
        "notes": result.notes,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="*", default=list(zoo.MODELS))
    p.add_argument("--cache", type=Path, default=HERE / ".cache")
    p.add_argument("--budget", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mode", choices=("weights", "int8"), default="weights")
    args = p.parse_args()
    for name in args.models:
        row = run(name, args.cache, args.budget, args.threads, args.mode)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
