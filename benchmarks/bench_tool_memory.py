"""The tool's own cost: peak RSS and wall time of each compress mode on a big synthetic
model (issue 15: goal <= 1.5x the model's bytes). Random weights: a memory and speed
measurement only, never an accuracy claim.

    python benchmarks/bench_tool_memory.py [--mb 200] [--modes weights,sparsity,global]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "weights": ["--quantize", "weights"],
    "sparsity": ["--prune-sparsity", "0.5"],
    "global": ["--prune-sparsity", "0.5", "--global"],
    "threshold": ["--prune-threshold", "0.1"],
    "int8": ["--quantize", "int8", "--calib", "{calib}", "--no-measure"],
}


def build(folder: Path, mb: int, external: bool) -> tuple[Path, Path]:
    """Two MatMuls whose weights together hold ``mb`` MB of float32 (in ``big.onnx.data``
    with ``external``, as every model past protobuf's 2 GB limit ships)."""
    cols = 1024
    rows = max(1, mb * 1024 * 1024 // 4 // cols // 2)
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((cols, rows), dtype=np.float32)
    w2 = rng.standard_normal((rows, cols), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cols])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "big.onnx"
    if external:
        onnx.save(model, path, save_as_external_data=True, location="big.onnx.data")
    else:
        onnx.save(model, path)
    calib = folder / "calib.npz"
    np.savez(calib, x=rng.standard_normal((4, cols), dtype=np.float32))
    return path, calib


def measure(model: Path, calib: Path, mode: str) -> tuple[int, float]:
    """Peak RSS (bytes) and wall seconds of one compress run in a fresh process."""
    out = model.with_name(f"out_{mode}.onnx")
    args = [a.format(calib=calib) for a in MODES[mode]]
    code = (
        "import sys\n"
        "from onnxcomp.cli import main\n"
        f"rc = main(['compress', {str(model)!r}, '-o', {str(out)!r}, *{args!r}])\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from this parent.
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{mode}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".data").unlink(missing_ok=True)
    return int(proc.stdout.strip().splitlines()[-1]) * 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--modes", default="weights,sparsity,global,threshold")
    parser.add_argument("--external", action="store_true", help="weights in big.onnx.data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, calib = build(Path(tmp), args.mb, args.external or args.mb >= 2000)
        size = sum(f.stat().st_size for f in Path(tmp).glob("big.onnx*"))
        print(f"model: {size / 1e6:.0f} MB")
        print("| mode | peak RSS MB | x model | wall s |")
        print("|---|---|---|---|")
        for mode in args.modes.split(","):
            rss, seconds = measure(model, calib, mode)
            print(f"| {mode} | {rss / 1e6:.0f} | {rss / size:.2f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
