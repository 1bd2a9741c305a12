"""The half of every peer runner that is not the peer: read the feeds, time the
quantization step, write one result JSON. Runs inside the peer's own venv, so it imports
only numpy and the standard library (never onnxcomp or the benchmarks package).

    python RUNNER.py SRC OUT CALIB RESULT_JSON CONFIG_JSON

CALIB is an .npz (axis 0 = samples) or a folder of .npz feeds, one sample each.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

Quantize = Callable[[Path, Path, list[dict[str, np.ndarray]], dict], "dict | None"]


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def input_names(src: Path) -> list[str]:
    """The graph inputs that are not initializers: what a feed must name."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name not in inits]


def read_feeds(calib: Path, names: list[str]) -> list[dict[str, np.ndarray]]:
    """The same calibration samples the in-process contenders see (contenders.feeds)."""
    if calib.is_dir():
        feeds = []
        for path in sorted(calib.glob("*.npz")):
            with np.load(path) as data:
                feeds.append({n: data[n] for n in names})
        return feeds
    with np.load(calib) as data:
        arrays = {n: data[n] for n in names}
    count = next(iter(arrays.values())).shape[0]
    return [{n: a[i : i + 1] for n, a in arrays.items()} for i in range(count)]


def load_model(src: Path, min_opset: int = 0) -> tuple[object, str | None]:
    """The model, upgraded to ``min_opset`` when older (NNCF and aimet quantize per
    channel from opset 13 and say so); the note says what was done."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= min_opset:
        return model, None
    return version_converter.convert_version(model, min_opset), f"opset {opset} -> {min_opset}"


def versions(*packages: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first}"[:240] if first else type(exc).__name__


def main(quantize: Quantize, packages: tuple[str, ...], argv: list[str] | None = None) -> int:
    """Time ``quantize`` alone: the peer and its libraries are imported before the clock."""
    src, out, calib, result_path, config = (argv or sys.argv[1:])[:5]
    cfg = json.loads(config)
    result: dict = {"versions": versions(*packages, "onnx", "onnxruntime", "numpy")}
    feeds = read_feeds(Path(calib), input_names(Path(src)))
    result["calib_samples"] = len(feeds)
    result["baseline_rss_mb"] = round(_status_mb("VmRSS") or 0.0, 1)
    result["load_before"] = os.getloadavg()[0]
    start, cpu0 = time.perf_counter(), time.process_time()
    try:
        extra = quantize(Path(src), Path(out), feeds, cfg)
        if extra:
            result["extra"] = extra
        result["ok"] = Path(out).exists()
        if not result["ok"]:
            result["error"] = "no output model written"
    except BaseException as exc:  # a peer may raise anything, even SystemExit
        result["ok"] = False
        result["error"] = first_line(exc)
        result["traceback"] = traceback.format_exc()[-4000:]
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["cpu_s"] = round(time.process_time() - cpu0, 3)
    result["load_after"] = os.getloadavg()[0]
    result["peak_rss_mb"] = round(_status_mb("VmHWM") or 0.0, 1)
    Path(result_path).write_text(json.dumps(result))
    return 0
