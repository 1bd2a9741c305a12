"""The built wheel installs into a new venv and its `onnxcomp demo` runs (opt-in:
``pytest -m packaging``; the isolated build fetches setuptools from the package index).

The venv sees this machine's site-packages for the dependencies (``--no-deps --no-index``:
nothing but the build backend is downloaded); onnxcomp itself comes from the wheel only."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import onnxcomp

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.packaging
def test_wheel_and_sdist_build_install_and_run_the_demo(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("sklearn")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], tmp_path)
    wheels = list(dist.glob("onnxcomp-*.whl"))
    sdists = list(dist.glob("onnxcomp-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    assert wheels[0].name.startswith(f"onnxcomp-{onnxcomp.__version__}-")  # one version source
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py, cli = env_dir / "bin" / "python", env_dir / "bin" / "onnxcomp"
    _run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])], tmp_path
    )
    where = _run([str(py), "-c", "import onnxcomp; print(onnxcomp.__file__)"], tmp_path)
    assert str(env_dir) in where  # the wheel's copy, not a checkout or an editable install
    assert onnxcomp.__version__ in _run([str(cli), "--version"], tmp_path)
    schema = "from onnxcomp.schemas import load_schema; print(load_schema('check')['title'])"
    assert "check --json" in _run([str(py), "-c", schema], tmp_path)  # package data shipped
    out = _run([str(cli), "demo", "--out", str(tmp_path / "demo")], tmp_path)
    assert "PASS" in out and (tmp_path / "demo" / "digits_small.onnx").exists()
