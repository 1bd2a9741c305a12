"""The quantization step's own cost against onnxruntime's quantize_static (issue 15).

Each compression runs in a fresh worker process (benchmarks/worker.py: numpy, onnx and
onnxruntime imported before the clock, so the time is the step itself plus imports of
the tool's own libraries), on the same calibration feeds: `onnxcomp compress --quantize
int8` with its measure step (the default), the same with `--no-measure` (the work
quantize_static does: calibrate, place Q/DQ, write), and quantize_static (QDQ, per-channel
s8 weights, u8 activations, minmax). Peak RSS is the worker's high-water mark; *net* is
that minus the worker's RSS before the step (the interpreter and the common imports).

    python -m benchmarks.quant_cost [--models resnet50,magika,...] [--repeat 2] [--json F]

Models: every cached corpus model (benchmarks/corpus) plus the zoo's ResNet-50 and
ShuffleNet. Speed only, never an accuracy claim (the corpus tables carry the metrics).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from benchmarks.worker import run_child

CONTENDERS = ("onnxcomp-int8", "onnxcomp-int8-no-measure", "ort-static-u8")
ZOO = ("resnet50", "shufflenet")


def _models(names: list[str] | None, cache: Path) -> list[tuple[str, Path, Path]]:
    """(name, model, calibration) of each model that is available here."""
    from benchmarks import corpus, zoo

    out = []
    for name in ZOO:
        if names is None or name in names:
            built = zoo.build(name, cache)
            out.append((name, built.model, built.calib))
    for name in corpus.registry():
        if names is not None and name not in names:
            continue
        try:
            prepared = corpus.prepare(name)
        except Exception as exc:  # not cached: the corpus is opt-in
            print(f"{name}: skipped ({str(exc).splitlines()[0][:120]})", file=sys.stderr)
            continue
        out.append((name, prepared.model, prepared.calib))
    return out


def _best(runs: list[dict]) -> dict:
    """The fastest successful run (the least disturbed), or the last failure."""
    ok = [r for r in runs if r.get("ok")]
    return min(ok, key=lambda r: r["seconds"]) if ok else runs[-1]


def measure(models, repeat: int, work: Path) -> list[dict]:
    rows = []
    for name, model, calib in models:
        row: dict = {"model": name}
        for contender in CONTENDERS:
            runs = []
            for i in range(repeat):
                out = work / f"{name}.{contender}.{i}.onnx"
                log = work / f"{name}.{contender}.{i}.log"
                runs.append(run_child(contender, model, out, calib, timeout=1800, log=log))
                out.unlink(missing_ok=True)
            best = _best(runs)
            row[contender] = {
                "ok": bool(best.get("ok")),
                "seconds": best.get("seconds"),
                "peak_rss_mb": best.get("peak_rss_mb"),
                "baseline_rss_mb": best.get("baseline_rss_mb"),
                "error": best.get("error"),
            }
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _ratio(row: dict, ours: str, key: str, net: bool = False) -> float | None:
    a, b = row[ours], row["ort-static-u8"]
    if not (a["ok"] and b["ok"]):
        return None
    x, y = a[key], b[key]
    if net:
        x, y = x - a["baseline_rss_mb"], y - b["baseline_rss_mb"]
    return x / y if y > 0 else None


def _fmt(x: float | None, spec: str = "{:.2f}") -> str:
    return "–" if x is None else spec.format(x)


def _line(row: dict) -> str:
    cells = [row["model"]]
    for c in CONTENDERS:
        r = row[c]
        cells.append(f"{_fmt(r['seconds'], '{:.1f}')} s" if r["ok"] else f"failed: {r['error']}")
    cells.append(_fmt(_ratio(row, "onnxcomp-int8", "seconds")) + "x")
    cells.append(_fmt(_ratio(row, "onnxcomp-int8-no-measure", "seconds")) + "x")
    for c in CONTENDERS:
        r = row[c]
        cells.append(f"{r['peak_rss_mb']:.0f} ({r['peak_rss_mb'] - r['baseline_rss_mb']:.0f})"
                     if r["ok"] else "–")  # fmt: skip
    cells.append(_fmt(_ratio(row, "onnxcomp-int8", "peak_rss_mb")) + "x")
    cells.append(_fmt(_ratio(row, "onnxcomp-int8-no-measure", "peak_rss_mb", net=True)) + "x")
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| model | ours s | ours --no-measure s | quantize_static s | time ours / ORT | "
    "--no-measure / ORT | peak RSS MB ours (net) | --no-measure (net) | ORT (net) | "
    "RSS ours / ORT | net RSS --no-measure / ORT |\n|" + "---|" * 11
)


def _geomean(values: list[float | None]) -> float | None:
    xs = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else None


def table(rows: list[dict]) -> str:
    lines = [HEADER, *(_line(r) for r in rows)]
    geo = [
        _geomean([_ratio(r, "onnxcomp-int8", "seconds") for r in rows]),
        _geomean([_ratio(r, "onnxcomp-int8-no-measure", "seconds") for r in rows]),
        _geomean([_ratio(r, "onnxcomp-int8", "peak_rss_mb") for r in rows]),
        _geomean([_ratio(r, "onnxcomp-int8-no-measure", "peak_rss_mb", net=True) for r in rows]),
    ]
    lines.append(
        f"| geometric mean | | | | {_fmt(geo[0])}x | {_fmt(geo[1])}x | | | | "
        f"{_fmt(geo[2])}x | {_fmt(geo[3])}x |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated; default: all available")
    parser.add_argument("--repeat", type=int, default=1, help="runs each; the fastest counts")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "onnxcomp-bench"
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else None
    with tempfile.TemporaryDirectory(prefix="onnxcomp-cost-") as tmp:
        print(HEADER, flush=True)
        rows = measure(_models(names, args.cache), args.repeat, Path(tmp))
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
