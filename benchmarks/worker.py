"""Run one contender on one model in this (fresh) process and report time and memory.

Invoked by the runner as ``python -m benchmarks.worker CONTENDER SRC OUT CALIB RESULT
[OPTIONS_JSON]`` (options: per-model keywords for the contender, e.g. auto's budget).
Libraries every contender needs are imported before the clock starts, so the time is
the compression itself; peak RSS is this process's own high-water mark (ru_maxrss),
which includes the interpreter and imports (reported separately as the baseline).
It is read from /proc's VmHWM, not ru_maxrss: Linux carries the parent's RSS at
fork over into a child's ru_maxrss, which would charge the runner's memory to it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What a child reports that the contender's row keeps: wall and CPU seconds of the
# quantization step, its peak RSS, the load average before and after it.
ROW_KEYS = (
    "seconds", "cpu_s", "peak_rss_mb", "baseline_rss_mb", "load_before", "load_after",
)  # fmt: skip


def _status_mb(key: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # elsewhere: best effort
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _no_output(extra: dict | None) -> str:
    """Why no model was written: auto says when nothing fits its budget."""
    if not extra or extra.get("found") is not False:
        return "no output model written"
    spent = f"{extra['trials']} trials, {extra['seconds']:.0f} s"
    if extra["objective"] == "latency" and extra.get("best_global"):
        return f"within budget but not faster than fp32 in auto's own timing ({spent})"
    return f"nothing within budget ({extra['metric']} drop <= {extra['max_drop']}; {spent})"


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an error, with its type, short enough for a table."""
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}"[:240] if first else type(exc).__name__


def main(argv: list[str]) -> int:
    name, src, out, calib, result_path, *rest = argv
    options = json.loads(rest[0]) if rest else {}
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    from benchmarks.contenders import CONTENDERS

    contender = CONTENDERS[name]
    baseline = _status_mb("VmRSS") or 0.0
    result: dict = {"contender": name, "baseline_rss_mb": round(baseline, 1)}
    result["load_before"] = os.getloadavg()[0]
    start, cpu0 = time.perf_counter(), time.process_time()
    try:
        extra = contender.run(Path(src), Path(out), Path(calib), **options)
        if extra:
            result["extra"] = extra
        result["ok"] = Path(out).exists()
        if not result["ok"]:
            result["error"] = _no_output(extra)
    except BaseException as exc:  # a contender may raise anything, even SystemExit
        result["ok"] = False
        result["error"] = one_line(exc)
        result["traceback"] = traceback.format_exc()[-4000:]
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["cpu_s"] = round(time.process_time() - cpu0, 3)  # all threads of the process
    result["load_after"] = os.getloadavg()[0]
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    Path(result_path).write_text(json.dumps(result))
    return 0


def run_child(
    name: str,
    src: Path,
    out: Path,
    calib: Path,
    *,
    timeout: float,
    log: Path,
    options: dict | None = None,
) -> dict:
    """Start a worker for one compression and return its result (or why it died).

    A peer contender (NNCF, Quark, aimet-onnx) runs in its own venv instead."""
    from benchmarks.contenders import CONTENDERS

    if CONTENDERS[name].peer:
        from benchmarks.peers.run import run_peer

        return run_peer(name, src, out, calib, timeout=timeout, log=log)
    result_path = out.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.worker", name, str(src), str(out), str(calib)]
    cmd.append(str(result_path))
    if options:
        cmd.append(json.dumps(options))
    start = time.perf_counter()
    with log.open("w") as log_file:
        try:
            proc = subprocess.run(
                cmd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                cwd=REPO,
            )
        except subprocess.TimeoutExpired:
            return {"contender": name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    if result_path.exists():
        return json.loads(result_path.read_text())
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = tail[-1][:200] if tail else "no output"
    return {
        "contender": name,
        "ok": False,
        "error": f"worker died (exit {proc.returncode}): {last}",
        "seconds": round(time.perf_counter() - start, 3),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
