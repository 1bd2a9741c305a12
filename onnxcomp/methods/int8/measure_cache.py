"""The int8 measure step's decisions, kept per machine so the same model on the same
machine gives the same file.

Timings decide which op families stay float; a busy machine (or a second run) must not
change the file. A decision is stored under a key made of what it depends on: this CPU
(model name and flags), onnxruntime's and onnxcomp's versions, the weight-quantized model
(its serialized bytes), the calibrated ranges and the options that shape the int8 graph
or judge it. ``--measure cached`` (the default) reuses a stored decision, ``fresh``
measures again and replaces it, ``off`` never measures. The folder is
``$ONNXCOMP_CACHE_DIR/measure`` (default ``~/.cache/onnxcomp/measure``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    root = os.environ.get("ONNXCOMP_CACHE_DIR") or Path.home() / ".cache" / "onnxcomp"
    return Path(root) / "measure"


@lru_cache(maxsize=1)
def machine() -> str:
    """CPU model and flags (what decides which kernels onnxruntime picks)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == (platform.processor() or ""):
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
                if flags and model:
                    break
    except OSError:
        pass
    return f"{model} | {flags} | cores {os.cpu_count()}"


def _own_version() -> str:
    """onnxcomp's installed version, read from its metadata: importing the package's
    ``__version__`` would make this floor import the API above it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxcomp")
    except PackageNotFoundError:  # run from a source tree
        return "source"


def key(model_bytes: bytes, ranges: Any, options: dict[str, Any]) -> str:
    import onnxruntime

    h = hashlib.sha256()
    for part in (machine(), onnxruntime.__version__, _own_version()):
        h.update(part.encode() + b"\0")
    h.update(hashlib.sha256(model_bytes).digest())
    h.update(json.dumps(ranges, sort_keys=True, default=str).encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load(k: str) -> dict[str, Any] | None:
    path = cache_dir() / f"{k}.json"
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and isinstance(entry.get("families"), list) else None


def store(k: str, entry: dict[str, Any]) -> None:
    """Atomically (a cache shared by concurrent runs); a cache that cannot be written
    only costs the next run a measurement."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".m-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as f:
            json.dump({**entry, "stored": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        os.replace(tmp, folder / f"{k}.json")
    except OSError:
        pass
