"""Every compression mode on the corpus transformers, against issue 27's targets.

    python -m benchmarks.transformer_modes [--models minilm-l3,minilm-l3-esp,g2p-id-bert]
        [--modes ...] [--out DIR] [--json FILE] [--pool N] [--distill-steps N]

``--pool N`` (the MiniLMs): every mode's ``--calib`` is N unlabeled texts (the
calibration texts, then more docstrings no evaluation pair uses: benchmarks/corpus/text.py
``unlabeled_texts``) instead of the corpus's 64; distillation needs more than 48 texts.

Per model and mode: the task metric's loss in points vs fp32 (the corpus scorer), the file
size ratio, speed @1 thread vs fp32 (sessions interleaved in one process, the calling
thread's CPU time beside wall time, so a loaded machine shows as CPU << wall), the load
average, compress CPU seconds, and ``onnxcomp check``'s figures (``--task embed`` on the
encoders, the model's own task otherwise). onnxruntime's
``quantize_dynamic`` is the int8 reference. One JSON line per result, appended to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import measure

DISTILL = ["--recover", "distill", "--task", "embed"]  # the MiniLM encoders
CB4 = ["--quantize", "codebook", "--bits", "4", "--pack"]
CH50_INT8 = ["--prune-channels", "0.5", "--quantize", "int8", "--calib", "{calib}"]
MODES: dict[str, list[str]] = {
    "int8": ["--quantize", "int8", "--calib", "{calib}"],
    "int4": ["--quantize", "int4", "--calib", "{calib}"],
    "codebook4-pack": CB4,
    "codebook4-pack-calib": [*CB4, "--calib", "{calib}"],
    # issue 27's "4-bit codebook + pack <= 1/8 of fp32": the budget lowers bits where the
    # task (on --calib) loses least
    "codebook4-eighth": [*CB4, "--target-size", "0.125", "--calib", "{calib}"],
    "prune-ch-0.25": ["--prune-channels", "0.25", "--calib", "{calib}"],
    "prune-ch-0.3": ["--prune-channels", "0.3", "--calib", "{calib}"],
    "prune-ch-0.35": ["--prune-channels", "0.35", "--calib", "{calib}"],
    "prune-ch-0.4": ["--prune-channels", "0.4", "--calib", "{calib}"],
    # --task embed: the channel fit leaves padding tokens' rows out (the task reads none)
    "prune-ch-0.3-embed": ["--prune-channels", "0.3", "--calib", "{calib}", "--task", "embed"],
    # --recover distill needs torch (pip install 'onnxcomp[distill]')
    "prune-ch-0.3-distill": ["--prune-channels", "0.3", "--calib", "{calib}", *DISTILL],
    "prune-ch-0.35-distill": ["--prune-channels", "0.35", "--calib", "{calib}", *DISTILL],
    # issue 26's MiniLM rows: channels 0.5 alone and with int8, plain vs distilled
    "prune-ch-0.5-embed": ["--prune-channels", "0.5", "--calib", "{calib}", "--task", "embed"],
    "prune-ch-0.5-distill": ["--prune-channels", "0.5", "--calib", "{calib}", *DISTILL],
    "prune-ch-0.5-int8-embed": [*CH50_INT8, "--task", "embed"],
    "prune-ch-0.5-int8-distill": [*CH50_INT8, *DISTILL],
    "ort-dynamic": [],  # onnxruntime.quantization.quantize_dynamic, QInt8 weights
}
# The embedding output `onnxcomp check --task embed` reads, per corpus model.
EMBED_OUTPUT = {"minilm-l3": "461", "minilm-l3-esp": "hidden"}
# Models that are no encoder: the task `check` judges them on instead. The token
# classifier's per-position argmax, compared as a sequence with the original's: stricter
# than its task (every position counts, padding and unmasked letters too).
CHECK_TASK = {"g2p-id-bert": ["--task", "sequence"]}


def compress(mode: str, src: Path, out: Path, calib: Path, steps: int | None = None) -> dict:
    """Build one file; CPU seconds and peak RSS of the child process (wall beside it).
    ``steps``: ``--distill-steps`` of the distill modes (else the command's default)."""
    t0 = time.perf_counter()
    if mode == "ort-dynamic":
        code = (
            "import sys; from onnxruntime.quantization import quantize_dynamic, QuantType; "
            "quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)"
        )
        cmd = [sys.executable, "-c", code, str(src), str(out)]
    else:
        args = [a.replace("{calib}", str(calib)) for a in MODES[mode]]
        cmd = [sys.executable, "-m", "onnxcomp", "compress", str(src), "-o", str(out), *args]
        cmd.append("--allow-larger")
        if steps and "distill" in args:
            cmd += ["--distill-steps", str(steps)]
    load = os.getloadavg()
    with tempfile.TemporaryFile("w+") as err:  # the notes (stdout) and errors (stderr)
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU and peak RSS
        err.seek(0)
        stderr = err.read()
    row = {
        "compress_wall_s": time.perf_counter() - t0,
        "compress_cpu_s": usage.ru_utime + usage.ru_stime,
        "compress_peak_rss_mb": usage.ru_maxrss / 1024,
        "load_compress_start": load,
        "load_compress_end": os.getloadavg(),
    }
    notes = [line for line in stderr.splitlines() if "distill (" in line]
    if notes:
        row["distill_note"] = notes[-1]
    if os.waitstatus_to_exitcode(status) != 0:
        row["error"] = (stderr.strip().splitlines() or ["?"])[-1]
    return row


def speed(orig: Path, comp: Path, feeds: list[dict], rounds: int) -> dict:
    """Interleaved 1-thread runs over a few real feeds: wall and thread-CPU ratios."""
    sessions = {"fp32": measure.session(orig, 1), "comp": measure.session(comp, 1)}
    for s in sessions.values():
        for f in feeds[:2]:
            s.run(None, f)
    wall: dict[str, list[float]] = {k: [] for k in sessions}
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            t0, c0 = time.perf_counter(), time.thread_time()
            for f in feeds:
                sessions[name].run(None, f)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.thread_time() - c0)
    med = {k: (float(np.median(wall[k])), float(np.median(cpu[k]))) for k in sessions}
    return {
        "x_fp32_speed_wall": med["fp32"][0] / med["comp"][0],
        "x_fp32_speed_cpu": med["fp32"][1] / med["comp"][1],
        "fp32_ms_per_feed_cpu": 1000 * med["fp32"][1] / len(feeds),
        "cpu_over_wall": med["fp32"][1] / med["fp32"][0],
    }


def check(name: str, orig: Path, comp: Path, data: Path) -> dict:
    """``onnxcomp check`` figures on the model's task (the task-aware judge), as JSON."""
    cmd = [sys.executable, "-m", "onnxcomp", "check", str(orig), str(comp), "--data", str(data)]
    task = CHECK_TASK.get(name) or ["--task", "embed", "--task-arg", f"output={EMBED_OUTPUT[name]}"]
    cmd += [*task, "--runs", "5"]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, check=False)
    try:
        rep = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"check_error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return {"check": rep.get("task") or rep.get("fidelity") or rep}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="minilm-l3,minilm-l3-esp,g2p-id-bert")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--out", type=Path, default=Path("/tmp/onnxcomp-transformer-modes"))
    p.add_argument("--json", type=Path, default=Path("/tmp/onnxcomp-transformer-modes.jsonl"))
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--pool", type=int, default=0, help="N unlabeled texts as --calib")
    p.add_argument("--distill-steps", type=int, default=None, help="of the distill modes")
    args = p.parse_args()
    from benchmarks.corpus import prepare, registry

    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        spec, prep = registry()[name], prepare(name)
        calib = prep.calib
        if args.pool:
            from benchmarks.corpus.text_more import unlabeled_pool

            calib = unlabeled_pool(name, args.out / f"pool-{name}-{args.pool}", args.pool)
        fp32 = spec.score(prep.model, prep, 1).value
        feeds = []
        for f in sorted(prep.eval.glob("d*.npz"))[:16]:
            with np.load(f) as z:
                feeds.append({k: z[k] for k in z.files})
        for mode in args.modes.split(","):
            out = args.out / f"{name}.{mode}.onnx"
            row: dict = {"model": name, "mode": mode, "fp32": fp32, "pool": args.pool}
            row["distill_steps"] = args.distill_steps
            row.update(compress(mode, prep.model, out, calib, args.distill_steps))
            if "error" not in row:
                got = spec.score(out, prep, 1)
                row["metric"], row["value"] = got.metric, got.value
                row["loss_points"] = 100 * (fp32 - got.value)
                row["extra"] = got.extra
                row["size_ratio"] = out.stat().st_size / prep.model.stat().st_size
                row["load_before_speed"] = os.getloadavg()[0]
                row.update(speed(prep.model, out, feeds, args.rounds))
                if not args.no_check:
                    row.update(check(name, prep.model, out, prep.eval))
            row["load"] = os.getloadavg()
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "check"}), flush=True)


if __name__ == "__main__":
    main()
