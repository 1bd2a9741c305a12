"""One cached virtual environment per peer quantizer, outside the repo.

A peer (NNCF, Quark, aimet-onnx) brings its own onnx, onnxruntime and often torch pins;
installing it into the benchmark's environment would change the versions the other
contenders run on. Each peer gets ``<cache>/<name>-<version>/`` (``$ONNXCOMP_PEERS_CACHE``
or ``~/.cache/onnxcomp-peers``), built once with pip from pinned requirements; a marker
file records the requirements it was built from and the versions pip resolved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MARKER = "onnxcomp-peer.json"


class PeerUnavailable(RuntimeError):
    """The peer's venv is missing (installs not allowed) or could not be built."""


def cache_root() -> Path:
    root = os.environ.get("ONNXCOMP_PEERS_CACHE") or Path.home() / ".cache" / "onnxcomp-peers"
    return Path(root)


@dataclass(frozen=True)
class PeerEnv:
    """A peer package at a pinned version, with the requirements pip installs for it."""

    name: str  # short name: nncf, quark, aimet
    package: str  # distribution name on the package index
    version: str
    requirements: tuple[str, ...]  # every one pinned with ==
    report: tuple[str, ...] = ()  # distributions whose resolved versions are printed

    @property
    def root(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def pins(self) -> list[str]:
        return [f"{self.package}=={self.version}", *self.requirements]

    def marker(self) -> dict | None:
        """What the venv was built from, or None when it is missing or stale."""
        try:
            meta = json.loads((self.root / MARKER).read_text())
        except (OSError, ValueError):
            return None
        return meta if meta.get("pins") == self.pins() and self.python.exists() else None

    def ensure(self, *, install: bool, log: Path | None = None) -> dict:
        """The venv's marker, building the venv first when allowed."""
        meta = self.marker()
        if meta is not None:
            return meta
        if not install:
            raise PeerUnavailable(f"{self.package}=={self.version} not installed in {self.root}")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("a") if log else subprocess.DEVNULL
        try:
            for cmd in (
                [sys.executable, "-m", "venv", "--clear", str(self.root)],
                [str(self.python), "-m", "pip", "install", "-q", *self.pins()],
            ):
                proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
                if proc.returncode != 0:
                    if log:
                        out.write(proc.stderr)
                    raise PeerUnavailable(f"install {self.package}: {install_error(proc.stderr)}")
        finally:
            if log:
                out.close()
        meta = {"pins": self.pins(), "versions": self._resolved()}
        (self.root / MARKER).write_text(json.dumps(meta, indent=1))
        return meta

    def _resolved(self) -> dict[str, str | None]:
        code = (
            "import json, sys\nfrom importlib import metadata\nout = {}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = metadata.version(p)\n"
            "    except metadata.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))"
        )
        names = [self.package, *self.report]
        proc = subprocess.run(
            [str(self.python), "-c", code, *names], capture_output=True, text=True, check=True
        )
        return json.loads(proc.stdout)


def install_error(stderr: str) -> str:
    """pip's first ERROR line (its warnings about extra index folders come first)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[0][:240]
