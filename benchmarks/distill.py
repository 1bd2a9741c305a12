"""Repair after compression on the real corpus: plain vs closed form vs blockwise vs distill.

Per row (a corpus model and a compression from issue 26) and method (the plain
compressed file, ``--recover gptq|sparsegpt`` where one applies, ``--recover blockwise``,
``--recover distill``, and ``closed+distill``: the closed-form repair then distillation
from its values, ``--recover gptq,distill``): the task metric of the written file, wall
and CPU seconds and peak RSS of the run (a child process each, read from ``os.wait4``), and the load
average when it started. A failing run (an op the op table cannot run yet, a timeout)
shows its first error line and the table goes on.

    python -m benchmarks.distill [--rows a,b] [--methods plain,blockwise] [--timeout 900]
    python -m benchmarks.distill --speed   # distill ~10M parameters, 1,000 samples, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.fidelity import TASKS

# row -> (model, compression options, the closed-form repair that applies or None)
ROWS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "digits-cb2-s75": (
        "digits-mlp",
        {"quantize": "codebook", "bits": 2, "prune_sparsity": 0.75},
        "sparsegpt",
    ),
    "minilm-l3-ch50": ("minilm-l3", {"prune_channels": 0.5}, None),
    "minilm-l3-int4": ("minilm-l3", {"quantize": "int4", "awq": False}, "gptq"),
    "cls-ch50": ("paddle-ocr-cls", {"prune_channels": 0.5}, None),
    "ddddocr-ch50": ("ddddocr-captcha", {"prune_channels": 0.5}, None),
    "rec-int8-reduced": ("paddle-ocr-rec", {"quantize": "int8", "weight_range": "reduced"}, "gptq"),
    "rec-cb4": ("paddle-ocr-rec", {"quantize": "codebook", "bits": 4}, None),
    "minilm-l6-ch50": ("zoo:minilm", {"prune_channels": 0.5}, None),
    "yolo-int8": ("doclaynet-yolov8n", {"quantize": "int8"}, "gptq"),
}
METHODS = ("plain", "closed", "blockwise", "distill", "closed+distill")  # table columns
RUN_ORDER = ("plain", "blockwise", "closed", "distill", "closed+distill")
CACHE = Path.home() / ".cache" / "onnxcomp-bench" / "distill"


def _digits() -> tuple[Path, Path, Path]:
    from onnxcomp.cli.demo import build_digits

    folder = CACHE / "digits"
    if not (folder / "digits.onnx").exists():
        folder.mkdir(parents=True, exist_ok=True)
        build_digits(folder)
    return folder / "digits.onnx", folder / "digits_calib.npz", folder / "digits_test.npz"


def _digits_accuracy(path: Path, test: Path) -> float:
    import numpy as np
    import onnxruntime as ort

    data = np.load(test)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predicted = session.run(None, {"pixels": data["pixels"]})[0].argmax(1)
    return float((predicted == data["label"]).mean())


def _zoo_cosine(path: Path, reference: Path, evals: Path, output: str) -> float:
    """Mean per-sample cosine of ``output`` against the fp32 model's, on the zoo's eval."""
    import numpy as np
    import onnxruntime as ort

    feeds = dict(np.load(evals))
    got = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run([output], feeds)[0]
        for p in (path, reference)
    ]
    a, b = (g.reshape(len(g), -1).astype(np.float64) for g in got)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return float(cos.mean())


def child(row: str, method: str, out: Path, steps: int) -> dict[str, Any]:
    """One compression in this process; its task metric (and the fp32 one for plain)."""
    from onnxcomp import compress

    name, options, closed = ROWS[row]
    options = dict(options)
    chained = f"{closed},distill" if closed else None
    recover = {"plain": None, "closed": closed, "closed+distill": chained}.get(method, method)
    if method.startswith("closed") and closed is None:
        return {"skipped": "no closed-form repair for this compression"}
    task, args = TASKS.get(name, ("classify", ()))
    if name.startswith("zoo:"):
        from benchmarks.zoo import build

        built = build(name[4:], CACHE.parent)
        model, calib, metric = built.model, built.calib, f"{built.output} cosine to fp32"
        task, args = ("embed", ()) if built.kind == "embedding" else ("classify", ())
        score = lambda p: _zoo_cosine(p, built.model, built.eval, built.output)  # noqa: E731
    elif name == "digits-mlp":
        model, calib, test = _digits()
        score = lambda p: _digits_accuracy(p, test)  # noqa: E731
        metric = "accuracy"
    else:
        from benchmarks.corpus import prepare, registry

        spec, prep = registry()[name], prepare(name)
        model, calib, metric = prep.model, prep.calib, spec.metric
        pool = int(os.environ.get("ONNXCOMP_DISTILL_POOL", "0"))
        if pool:
            from benchmarks.corpus.ocr import unlabeled_pool

            calib = unlabeled_pool(name, CACHE / f"pool-{name}-{pool}", pool)
        score = lambda p: spec.score(p, prep, 1).value  # noqa: E731
    if recover is not None and recover.split(",")[-1] in ("blockwise", "distill"):
        options["distill_steps"] = steps
        options["distill_progress"] = True  # per-step lines in the child's stderr log
    result = compress(
        model, out, calib=str(calib), recover=recover, task=task, task_arg=args, **options
    )
    notes = [n for n in result.notes if n.startswith(("distill", "blockwise", "recover "))]
    row_out = {"metric": metric, "value": score(out), "note": " / ".join(notes)}
    if method == "plain":
        row_out["fp32"] = score(Path(model))
    return row_out


def measured(argv: list[str], timeout: float, cpu_limit: int | None = None) -> dict[str, Any]:
    """Run ``argv`` as a child: its last stdout line (JSON), wall, CPU and peak RSS.
    ``cpu_limit``: CPU seconds (RLIMIT_CPU), fair on a shared machine where the wall
    ``timeout`` depends on the neighbours."""
    import resource

    def limit() -> None:
        if cpu_limit:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 5))

    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit
    )
    usage = None
    while True:
        pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.5)
    wall = time.perf_counter() - start
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    (CACHE / "logs").mkdir(parents=True, exist_ok=True)  # the whole stderr, for the failures
    (CACHE / "logs" / f"{'-'.join(argv[-3:-1]) or 'speed'}.err").write_text(stderr)
    figures = {
        "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024, "load": load,
    }  # fmt: skip
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if wall > timeout:
        return {**figures, "error": f"timeout after {timeout:.0f} s"}
    if not lines and cpu_limit and figures["cpu_s"] >= cpu_limit - 1:
        return {**figures, "error": f"CPU limit of {cpu_limit} s reached"}
    if not lines:
        errors = [line for line in stderr.splitlines() if "Error" in line or "error" in line]
        first = errors[-1] if errors else (stderr.strip().splitlines() or ["no output"])[-1]
        return {**figures, "error": first[:300]}
    return {**figures, **json.loads(lines[-1])}


def cell(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return "-" if r["skipped"].startswith("no closed") else "not run"
    if "error" in r:
        return f"failed: {r['error']}"
    return (
        f"{r['value']:.3f} ({r['wall_s']:.0f} s, {r['cpu_s']:.0f} s CPU, "
        f"{r['peak_rss_mb']:.0f} MB, load {r['load']:.1f})"
    )


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| row | metric fp32 | plain | GPTQ/SparseGPT | blockwise | distill | GPTQ/SparseGPT "
        "then distill |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, per in results.items():
        plain = per.get("plain", {})
        fp32 = f"{plain['metric']} {plain['fp32']:.3f}" if "fp32" in plain else "?"
        no_closed = row in ROWS and ROWS[row][2] is None
        cells = [
            cell(per[m]) if m in per else "-" if m.startswith("closed") and no_closed else "not run"
            for m in METHODS
        ]
        lines.append(f"| {row} | {fp32} | " + " | ".join(cells) + " |")
    notes = [
        f"- {row} {m}: {r['note']}"
        for row, per in results.items() for m, r in per.items() if r.get("note")
    ]  # fmt: skip
    return "\n".join([*lines, "", *notes])


def speed(timeout: float) -> dict[str, Any]:
    """The issue's target: distill a ~10M-parameter model over 1,000 samples, one epoch."""
    argv = [sys.executable, "-m", "benchmarks.distill", "--speed-child"]
    return measured(argv, timeout, 1800)


SPEED_MODEL = "inception_v2"  # zoo (onnx wheel architecture): 11.2M parameters, the
# closest to 10M of the corpus and zoo models the op table runs (densenet121: 8.0M)


def speed_child(name: str = SPEED_MODEL) -> dict[str, Any]:
    """1,000 training samples (the calibration images repeated; a quarter more is held
    back), one epoch of minibatches of 32, int8 weights."""
    import numpy as np
    import onnx

    from benchmarks.zoo import build
    from onnxcomp import compress

    built = build(name, CACHE.parent)
    proto = onnx.load(str(built.model))
    params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer)
    feeds = dict(np.load(built.calib))
    total = 1334  # 1,000 trained on, 334 held back
    data = {k: np.resize(v, (total, *v.shape[1:])) for k, v in feeds.items()}
    work = CACHE / "speed"
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "calib.npz", **data)
    del data
    start, cpu = time.perf_counter(), time.process_time()
    result = compress(
        built.model, work / "out.onnx", calib=str(work / "calib.npz"), quantize="weights",
        recover="distill", distill_steps=1000 // 32,
    )  # fmt: skip
    notes = [n for n in result.notes if n.startswith("distill")]
    return {
        "model": name, "parameters": params, "seconds": time.perf_counter() - start,
        "process_cpu_s": time.process_time() - cpu, "note": notes[0] if notes else "",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--timeout", type=float, default=3600, help="wall seconds per run")
    parser.add_argument("--cpu-limit", type=int, default=900, help="CPU seconds per run")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", type=Path, default=CACHE / "results.json")
    parser.add_argument(
        "--pool", type=int, default=0,
        help="OCR rows: N more unlabeled inputs drawn like the calibration set, for every method",
    )  # fmt: skip
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--speed-child", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("ROW", "METHOD", "OUT"))
    a = parser.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], Path(a.child[2]), a.steps)))
        return
    if a.speed_child:
        print(json.dumps(speed_child()))
        return
    if a.speed:
        print(json.dumps(speed(a.timeout)))
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    if a.json.exists():
        results = json.loads(a.json.read_text())
    methods = [m for m in RUN_ORDER if m in a.methods.split(",")]
    for row in a.rows.split(","):
        for method in methods:
            out = CACHE / f"{row}-{method}.onnx"
            done = results.get(row, {}).get(method)
            if done is not None and "error" not in done:
                continue
            if method.startswith("closed") and ROWS[row][2] is None:
                results.setdefault(row, {})[method] = {"skipped": "no closed form"}
                continue
            if a.pool:  # the children read it (benchmarks/corpus/ocr.py unlabeled_pool)
                os.environ["ONNXCOMP_DISTILL_POOL"] = str(a.pool)
            argv = [sys.executable, "-m", "benchmarks.distill", "--steps", str(a.steps)]
            r = measured([*argv, "--child", row, method, str(out)], a.timeout, a.cpu_limit)
            results.setdefault(row, {})[method] = r
            print(row, method, cell(r), flush=True)
            a.json.write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
