"""sha256 of every ``--no-measure`` output: a structural change must not change a byte.

Compresses the test-builder models and the demo's digits model in every mode through the
CLI of whichever onnxcomp the running interpreter imports, and prints one table row per
model (a column per mode). Run it on two checkouts and diff the JSON:

    python benchmarks/same_bytes.py --out /tmp/before.json   # in the base checkout's venv
    python benchmarks/same_bytes.py --out /tmp/after.json    # in this one's
    python benchmarks/same_bytes.py --compare /tmp/before.json /tmp/after.json

A mode a model cannot take records its exit code instead of a hash (compared as well).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx

TESTS = Path(__file__).resolve().parent.parent / "tests"

MODES: dict[str, list[str]] = {
    "weights": ["--quantize", "weights"],
    "int8": ["--quantize", "int8", "--calib", "{calib}"],
    "int8-smooth": ["--quantize", "int8", "--smoothquant", "--calib", "{calib}"],
    "int4": ["--quantize", "int4", "--calib", "{calib}"],
    "codebook": ["--quantize", "codebook", "--bits", "4", "--pack", "--calib", "{calib}"],
    "sparsity": ["--prune-sparsity", "0.5"],
    "channels": ["--prune-channels", "0.25", "--calib", "{calib}"],
    "gptq": ["--quantize", "weights", "--recover", "gptq", "--calib", "{calib}"],
    "sparsegpt": ["--prune-sparsity", "0.5", "--recover", "sparsegpt", "--calib", "{calib}"],
    "bias": ["--quantize", "int8", "--recover", "bias", "--calib", "{calib}"],
    "prune+int8": ["--prune-sparsity", "0.5", "--quantize", "int8", "--calib", "{calib}"],
}


def build_models(folder: Path) -> dict[str, Path]:
    """The builders' models (written as files) and the demo's digits model."""
    sys.path.insert(0, str(TESTS))
    import model_builders as mb

    made = {
        "conv_net": mb.conv_net(),
        "mlp_constants": mb.mlp_with_constants(),
        "if_model": mb.if_model(),
        "shared_weight": mb.shared_weight_model(),
        "embedding": mb.embedding_model(),
        "loop": mb.loop_model(),
        "transformer": mb.transformer(),
    }
    paths = {}
    for name, proto in made.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(proto, paths[name])
    demo = folder / "demo"
    try:
        demo_module = importlib.import_module("onnxcomp.cli.demo")
    except ImportError:  # a checkout from before the redesign (issue 28)
        demo_module = importlib.import_module("onnxcomp." + "demo")
    build_digits = demo_module.build_digits
    paths["digits"], _test, calib = build_digits(demo)
    (folder / "digits_calib.npz").write_bytes(Path(calib).read_bytes())
    return paths


def calib_for(model: Path, out: Path, n: int = 16) -> Path:
    """Seeded inputs for ``model``: named dims and the batch become ``n`` / 8."""
    rng = np.random.default_rng(0)
    proto = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    arrays = {}
    for value in proto.graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
        shape = [d or (n if i == 0 else 8) for i, d in enumerate(dims)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.integer):
            arrays[value.name] = rng.integers(0, 16, size=shape).astype(dtype)
        else:
            arrays[value.name] = rng.standard_normal(shape).astype(dtype)
    np.savez(out, **arrays)
    return out


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(out.parent.iterdir()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def run_one(model: Path, calib: Path, mode: str, folder: Path) -> str:
    out_dir = folder / f"{model.stem}-{mode}"
    out_dir.mkdir()
    out = out_dir / "out.onnx"
    args = [a.format(calib=calib) for a in MODES[mode]]
    cmd = [sys.executable, "-m", "onnxcomp", "compress", str(model), "-o", str(out),
           "--no-measure", *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return f"exit {done.returncode}"
    return digest(out)


def measure(jobs: int) -> dict[str, dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = build_models(folder)
        calibs = {
            name: folder / "digits_calib.npz"
            if name == "digits"
            else calib_for(path, folder / f"{name}_calib.npz")
            for name, path in models.items()
        }
        runs = [(name, mode) for name in models for mode in MODES]
        with ThreadPoolExecutor(jobs) as pool:
            futures = {
                run: pool.submit(run_one, models[run[0]], calibs[run[0]], run[1], folder)
                for run in runs
            }
        table: dict[str, dict[str, str]] = {}
        for (name, mode), future in futures.items():
            table.setdefault(name, {})[mode] = future.result()
        return table


def show(table: dict[str, dict[str, str]]) -> None:
    modes = list(MODES)
    print("| model | " + " | ".join(modes) + " |")
    print("|---" * (len(modes) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(row.get(m, "-")[:12] for m in modes) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        differ = [
            (m, k, before[m].get(k), after.get(m, {}).get(k))
            for m in before
            for k in before[m]
            if before[m].get(k) != after.get(m, {}).get(k)
        ]
        for row in differ:
            print("DIFFERS", *row)
        total = sum(len(r) for r in before.values())
        print(f"{total - len(differ)}/{total} outputs identical")
        return 1 if differ else 0
    table = measure(args.jobs)
    show(table)
    if args.out:
        args.out.write_text(json.dumps(table, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
