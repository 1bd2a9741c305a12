"""Does auto's budget hold on data it never saw? Seeds x {digits, minilm-l3}.

For each run: the chosen model's drop on the search part, on the held-back verification
part (and its upper bound), and on the benchmark's own unseen evaluation split; its
file size (auto's size objective); and, for comparison, the best single global setting
that meets the budget on the unseen split (every global rung auto tried, re-measured
there, with hindsight) and the best one auto's own verification accepts.

    python -m benchmarks.auto_holdout --seeds 0,1,2,3,4 --max-trials 30 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from onnxcomp.auto import auto
from onnxcomp.auto.space import build_space, deflate_size
from onnxcomp.auto.split import split_data
from onnxcomp.evaluate import Evaluator
from onnxcomp.io import model_io
from onnxcomp.io.data import input_specs, open_data
from onnxcomp.pipeline.compress import CompressOptions, compress
from onnxcomp.stats import drop_bound


def _digits(folder: Path) -> dict:
    from onnxcomp.cli.demo import LABELS, build_digits

    model, test, calib = build_digits(folder)
    return dict(
        model=model, calib=calib, data=calib, unseen=test, labels=LABELS, metric="accuracy",
        max_drop=0.01,
    )  # fmt: skip


def _minilm(folder: Path) -> dict:
    from benchmarks.corpus import prepare

    p = prepare("minilm-l3")
    return dict(
        model=p.model, calib=p.calib, data=None, unseen=p.eval, labels=None, metric="cosine",
        max_drop=0.01,
    )  # fmt: skip


MODELS = {"digits": _digits, "minilm-l3": _minilm}


def _unseen(spec: dict) -> Evaluator:
    specs = input_specs(model_io.load(spec["model"]))
    source = open_data(str(spec["unseen"]), specs, labels=spec["labels"])
    return Evaluator(str(spec["model"]), source, metric=spec["metric"])


def run_one(name: str, spec: dict, seed: int, max_trials: int, folder: Path) -> dict:
    out = folder / f"{name}_s{seed}.onnx"
    start = time.monotonic()
    res = auto(
        spec["model"], out, calib=str(spec["calib"]),
        data=None if spec["data"] is None else str(spec["data"]), labels=spec["labels"],
        max_drop=spec["max_drop"], metric=spec["metric"], max_trials=max_trials,
        seed=seed, allow_small_data=True, workers=2, log=lambda line: None,
    )  # fmt: skip
    unseen = _unseen(spec)
    row: dict = {
        "model": name,
        "seed": seed,
        "found": res.found,
        "seconds": time.monotonic() - start,
    }
    v = res.verification
    row["verify_samples"] = v.samples if v else None
    row["margin"] = v.margin if v else None
    row["widened"] = v.widened if v else None
    if res.found and res.chosen is not None:
        fin = next(f for f in v.finalists if f.trial == res.chosen.id)
        row.update(
            search_drop=res.chosen.drop, verify_drop=fin.verify_drop, bound=fin.bound,
            unseen_drop=unseen.score(out).drop, deflate_bytes=deflate_size(out),
            bytes=out.stat().st_size,
            finalists=[(f.trial, f.search_drop, f.verify_drop, f.bound, f.accepted)
                       for f in v.finalists],
        )  # fmt: skip
    # The best global setting judged on the unseen split (with hindsight), and the best
    # one that passes the same verification auto's finalists faced.
    space = build_space(str(spec["model"]), objective="size", has_calib=True)
    space.base = CompressOptions(calib=str(spec["calib"]))
    held = _held_back(spec, seed, v.samples if v else 0, folder / f"split_s{seed}")
    globals_ = []
    for t in res.trials:
        if t.stage != "global" or not t.ok:
            continue
        path = folder / f"{name}_s{seed}_global{t.id}.onnx"
        compress(spec["model"], path, space.to_options(t.config))
        drop = unseen.score(path).drop
        score = held.score(path)
        bound = drop_bound(score.drops, held.metric_name, 0.95, seed=seed)
        upper = bound.upper if bound is not None else score.drop
        certified = v is not None and upper <= v.margin + 1e-12
        label = space.ladder[max(t.config.values())].label
        globals_.append((label, drop, path.stat().st_size, upper, certified))
        path.unlink()
    meets = [g for g in globals_ if g[1] <= spec["max_drop"] + 1e-9]
    row["best_global_unseen"] = min(meets, key=lambda g: g[2]) if meets else None
    passed = [g for g in globals_ if g[4]]
    row["best_global_verified"] = min(passed, key=lambda g: g[2]) if passed else None
    row["globals"] = globals_
    return row


def _held_back(spec: dict, seed: int, samples: int, folder: Path) -> Evaluator:
    """An evaluator on the very samples auto held back (the split is seeded)."""
    specs = input_specs(model_io.load(spec["model"]))
    data = str(spec["data"] if spec["data"] is not None else spec["calib"])
    split = split_data(data, specs, folder, labels=spec["labels"], seed=seed)
    if split.verify_samples != samples:  # auto raised the held-back share
        split = split_data(data, specs, folder, labels=spec["labels"], seed=seed,
                           at_least=samples)  # fmt: skip
    source = open_data(split.verify, specs, labels=spec["labels"])
    return Evaluator(str(spec["model"]), source, metric=spec["metric"])


def table(rows: list[dict], budgets: dict[str, float]) -> str:
    lines = [
        "| model | seed | search drop | verify drop | bound (margin) | unseen drop | within | "
        "KB | best global verified (KB) | smaller | best global on unseen, hindsight (KB, drop) "
        "| smaller |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, gv = r["best_global_unseen"], r.get("best_global_verified")
        gtxt = f"{g[0]}: {g[2] / 1024:,.1f}, {g[1]:.4f}" if g else "none meets"
        gvtxt = f"{gv[0]}: {gv[2] / 1024:,.1f}" if gv else "none passes"
        if not r["found"]:
            lines.append(
                f"| {r['model']} | {r['seed']} | nothing accepted | | | | | | {gvtxt} | | "
                f"{gtxt} | |"
            )
            continue
        within = "yes" if r["unseen_drop"] <= budgets[r["model"]] + 1e-9 else "**NO**"
        smaller = "yes" if g is None or r["bytes"] < g[2] else "no"
        smaller_v = "yes" if gv is None or r["bytes"] < gv[2] else "no"
        widened = "*" if r["widened"] else ""
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['search_drop']:.4f} | {r['verify_drop']:.4f} | "
            f"{r['bound']:.4f} ({r['margin']:.4f}{widened}) | {r['unseen_drop']:.4f} | {within} | "
            f"{r['bytes'] / 1024:,.1f} | {gvtxt} | {smaller_v} | {gtxt} | {smaller} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits,minilm-l3")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--max-trials", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows, budgets = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            spec = MODELS[name](folder)
            budgets[name] = spec["max_drop"]
            for seed in (int(s) for s in args.seeds.split(",")):
                row = run_one(name, spec, seed, args.max_trials, folder)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows, budgets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
