"""Packed models in the oldest onnxruntime pyproject allows: same outputs as unpacked.

Opt-in (``pytest -m oldort``): a venv with that onnxruntime is made once in
``~/.cache/onnxcomp-oldort`` (``ONNXCOMP_OLDORT_CACHE`` moves it) from the package index;
without the index the test skips. The models are built here by the current code; the old
runtime loads each packed file and its unpacked twin and must give the same bytes out
(the decode is exact), as the default suite checks on the current runtime.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_builders import conv_net, embedding_model, if_model, mlp_with_constants

from onnxcomp import compress

pytestmark = pytest.mark.oldort

ROOT = Path(__file__).resolve().parents[1]

RUNNER = """
import sys, numpy as np, onnxruntime as ort
out = {}
for i, path in enumerate(sys.argv[2:]):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {}
    for inp in s.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in inp.shape]
        if "int" in inp.type:
            feed[inp.name] = np.ones(shape, np.int64)
        elif "bool" in inp.type:
            feed[inp.name] = np.ones(shape, bool)
        else:
            n = int(np.prod(shape))
            feed[inp.name] = np.linspace(-1, 1, n, dtype=np.float32).reshape(shape)
    for j, o in enumerate(s.run(None, feed)):
        out[f"{i}_{j}"] = o
np.savez(sys.argv[1], version=ort.__version__, **out)
"""


def _oldest() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'"onnxruntime>=([0-9.]+)"', text)
    assert m, "pyproject.toml names no onnxruntime floor"
    return m.group(1)


def _venv(version: str) -> Path:
    root = Path(os.environ.get("ONNXCOMP_OLDORT_CACHE", Path.home() / ".cache/onnxcomp-oldort"))
    venv = root / f"ort-{version}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # onnxruntime 1.18 was built against numpy 1.x
    pip = [str(python), "-m", "pip", "install", "-q", f"onnxruntime=={version}", "numpy<2"]
    if subprocess.run(pip, capture_output=True).returncode != 0:
        pytest.skip(f"could not install onnxruntime=={version} (no package index?)")
    return python


MODELS = {
    "conv": conv_net,
    "constants": mlp_with_constants,
    "if": if_model,
    "embedding": embedding_model,
}
# (bits, sparsity): plain bit-packed codes, gap-coded sparse codes, a bitmask
FORMS = [(3, 0.0), (2, 0.9), (4, 0.5)]


def test_packed_equals_unpacked_in_the_oldest_runtime(save_model, tmp_path):
    version = _oldest()
    python = _venv(version)
    paths = []
    for name, build in sorted(MODELS.items()):
        src = save_model(build(), f"{name}.onnx")
        for bits, sparsity in FORMS:
            for pack in (False, True):
                out = tmp_path / f"{name}_{bits}_{sparsity}_{int(pack)}.onnx"
                compress(src, out, quantize="codebook", bits=bits, pack=pack,
                         prune_sparsity=sparsity or None, allow_larger=True)  # fmt: skip
                paths.append(out)
    result = tmp_path / "old.npz"
    run = subprocess.run(
        [str(python), "-c", RUNNER, str(result), *map(str, paths)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = np.load(result)
    assert str(got["version"]).startswith(version)  # 1.18 is 1.18.0
    for i in range(0, len(paths), 2):  # unpacked, packed
        outs = sorted(k for k in got.files if k.startswith(f"{i}_"))
        assert outs, paths[i]
        for k in outs:
            twin = f"{i + 1}_{k.split('_')[1]}"
            assert np.array_equal(got[k], got[twin]), (paths[i + 1].name, k)
