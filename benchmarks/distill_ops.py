"""Which corpus graphs the distillation student can run: our op table vs onnx2torch.

For every cached corpus model (and the zoo MiniLM-L6) and every form onnxcomp writes for
it (fp32; --quantize weights, int8 --calib, int4 --calib, codebook --bits 4 [--pack];
--prune-channels 0.5), each graph is run on its calibration samples through
``optable.run_graph`` and through onnxruntime (no graph optimization, one thread), and
the largest error is reported relative to the output's largest magnitude (an element
near zero has no meaningful relative error; the scale of the output is what training
sees). onnx2torch, when installed, converts the same files and is scored the same way.

    python -m benchmarks.distill_ops --forms /tmp/dops-forms [--samples 4] [--onnx2torch]

Forms are written once into ``--forms`` by ``onnxcomp compress`` (``--make``). Only the
op table's figures need torch; onnx2torch is optional and skipped when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.io.model_io import load

CORPUS = (
    Path(os.environ.get("ONNXCOMP_CORPUS_CACHE") or Path.home() / ".cache/onnxcomp-corpus")
    / "prepared"
)
FORMS = {
    "fp32": None,
    "weights": ["--quantize", "weights"],
    "int8": ["--quantize", "int8", "--no-measure", "--calib"],
    "int4": ["--quantize", "int4", "--calib"],
    "codebook4": ["--quantize", "codebook", "--bits", "4"],
    "codebook4pack": ["--quantize", "codebook", "--bits", "4", "--pack"],
    "prune50": ["--prune-channels", "0.5", "--calib"],
}


def models(forms_dir: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (fp32 model, calibration data) for every cached model."""
    found = {}
    for folder in sorted(CORPUS.glob("*/")) if CORPUS.exists() else []:
        if (folder / "model.onnx").exists():
            found[folder.name] = (folder / "model.onnx", folder / "calib")
    zoo = forms_dir / "minilm-l6"
    if (zoo / "model.onnx").exists():
        found["minilm-l6"] = (zoo / "model.onnx", zoo / "minilm_calib.npz")
    return found


def make_forms(name: str, model: Path, calib: Path, forms_dir: Path) -> None:
    """Write each compressed form once (a failure leaves ``FORM.err``)."""
    out = forms_dir / name
    out.mkdir(parents=True, exist_ok=True)
    for form, args in FORMS.items():
        path = out / f"{form}.onnx"
        if args is None or path.exists() or (out / f"{form}.err").exists():
            continue
        cmd = [sys.executable, "-m", "onnxcomp", "compress", str(model), "-o", str(path)]
        cmd += [*args, *([str(calib)] if args[-1] == "--calib" else []), "--allow-larger"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and not path.exists():
            (out / f"{form}.err").write_text(proc.stderr[-2000:])


def samples(model: ir.Model, calib: Path, n: int) -> list[dict[str, np.ndarray]]:
    from onnxcomp.io.data import input_specs, open_data

    feeds = []
    for batch in open_data(str(calib), input_specs(model)):
        size = batch.size
        if not all(v.ndim and v.shape[0] == size for v in batch.feed.values()):
            size = 1  # inputs without a shared batch axis (a state): the batch is one sample
        for i in range(size):
            feeds.append({k: v[i : i + 1] if size > 1 else v for k, v in batch.feed.items()})
            if len(feeds) >= n:
                return feeds
    return feeds


REFERENCE_SECONDS: dict[str, float] = {}


def reference(path: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[list[str], list[list[Any]]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    start = time.process_time()
    outs = [sess.run(None, f) for f in feeds]
    REFERENCE_SECONDS[str(path)] = (time.process_time() - start) / max(len(feeds), 1)
    return names, outs


def rms_error(mine: Any, ref: Any) -> float:
    """||mine - ref|| / ||ref||: a few codes flipped at rounding boundaries barely move it."""
    a, b = np.asarray(mine, np.float64), np.asarray(ref, np.float64)
    norm = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / norm if norm > 0 else float(np.linalg.norm(a - b))


def rel_error(mine: Any, ref: Any) -> float:
    """max |mine - ref| / max |ref| (0 when both are empty or equal)."""
    a, b = np.asarray(mine, np.float64), np.asarray(ref, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not b.size:
        return 0.0
    diff = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    return diff / scale if scale > 0 else diff


def ours(path: Path, feeds: list, names: list[str], refs: list) -> dict[str, Any]:
    """Our table on the graph: runs / blocked by which op / max relative error, s/sample."""
    import torch

    from onnxcomp.methods.distill.ops.common import tensor_of
    from onnxcomp.methods.distill.optable import run_graph, unsupported

    model = load(path)
    bad = unsupported(model.graph)
    if bad:
        return {"status": "blocked", "ops": bad}
    weights = {
        n: tensor_of(v.const_value.numpy())
        for n, v in model.graph.initializers.items() if v.const_value is not None
    }  # fmt: skip
    torch.set_num_threads(1)  # honest CPU time on a loaded machine (see speed())
    worst, rms, seconds = 0.0, 0.0, 0.0
    try:
        for feed, ref in zip(feeds, refs, strict=True):
            env = {**weights, **{k: torch.from_numpy(np.array(v)) for k, v in feed.items()}}
            start = time.process_time()
            with torch.no_grad():
                out = run_graph(model.graph, env)
            seconds += time.process_time() - start
            for name, r in zip(names, ref, strict=True):
                if isinstance(r, np.ndarray) and r.dtype.kind in "fiub":
                    got = out[name].detach().numpy()
                    worst = max(worst, rel_error(got, r))
                    rms = max(rms, rms_error(got, r))
    except Exception as e:
        return {"status": "error", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    per = seconds / max(len(feeds), 1)
    return {"status": "runs", "rel_error": worst, "rms_error": rms, "cpu_s_per_sample": per}


def nodewise(path: Path, feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each node fed onnxruntime's own inputs: its largest relative error, and the codes
    (integer outputs: QuantizeLinear...) that differ. End to end, a code one float ulp
    from a rounding boundary may flip and the flip travels; node by node nothing travels."""
    import onnx
    import onnxruntime as ort
    import torch

    from onnxcomp.methods.distill.ops.common import tensor_of
    from onnxcomp.methods.distill.ops.program import program_for

    proto = onnx.load(str(path))
    names = [o for n in proto.graph.node for o in n.output if o]
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ref = dict(zip(names, sess.run(None, feed), strict=True))
    model = load(path)
    known = {
        n: tensor_of(v.const_value.numpy())
        for n, v in model.graph.initializers.items()
        if v.const_value is not None
    }
    known.update({k: torch.from_numpy(np.array(v)) for k, v in feed.items()})
    program = program_for(model.graph)
    known.update(program.folded)
    known.update(
        {k: torch.from_numpy(np.array(v)) for k, v in ref.items() if isinstance(v, np.ndarray)}
    )
    worst, flipped, codes = 0.0, 0, 0
    with torch.no_grad():
        for fn, ins, outs, node, branches in program.steps:
            if branches is not None or any(n and n not in known for n in ins):
                continue
            got = fn([known[n] if n else None for n in ins])
            for name, value in zip(outs, got, strict=False):
                r = ref.get(name)
                if not isinstance(r, np.ndarray) or not name:
                    continue
                mine = value.numpy()
                if r.dtype.kind in "iub" and node.op_type not in ("Shape", "Size"):
                    codes += r.size
                    flipped += int(np.sum(mine.astype(np.float64) != r))
                elif r.dtype.kind == "f":
                    worst = max(worst, rel_error(mine, r))
    return {"node_rel_error": worst, "codes_differing": flipped, "codes": codes}


def _onnx2torch() -> Any:
    """onnx2torch's ``convert``, or None when it is not installed.

    onnx2torch imports torchvision for its NonMaxSuppression and RoiAlign converters
    alone; PyPI's torchvision does not load its compiled ops against the CPU torch wheel,
    so a stub stands in (no corpus graph has either op)."""
    import importlib.util
    import types

    if importlib.util.find_spec("onnx2torch") is None:
        return None
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        stub, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.roi_align = ops.nms = None  # type: ignore[attr-defined]
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": stub, "torchvision.ops": ops})
    from onnx2torch import convert

    return convert


def _onnx2torch_missing(proto: Any) -> list[str]:
    """Every op of the graph (subgraphs too) onnx2torch has no converter for."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain or "": o.version for o in proto.opset_import}
    missing: set[str] = set()

    def walk(graph: Any) -> None:
        for node in graph.node:
            domain = node.domain or ""
            try:
                get_converter(node.op_type, opsets.get(domain, 1), domain)
            except (NotImplementedError, Exception):
                missing.add(f"{domain}.{node.op_type}" if domain else node.op_type)
            for attr in node.attribute:
                for sub in [attr.g, *attr.graphs] if attr.g.node or attr.graphs else []:
                    walk(sub)

    walk(proto.graph)
    return sorted(missing)


def theirs(path: Path, feeds: list, names: list[str], refs: list) -> dict[str, Any]:
    """onnx2torch on the same graph: converts? which ops block it? its error."""
    convert = _onnx2torch()
    if convert is None:
        return {"status": "absent"}
    import onnx
    import torch

    proto = onnx.load(str(path))
    missing = _onnx2torch_missing(proto)
    inits = {i.name for i in proto.graph.initializer}
    order = [i.name for i in proto.graph.input if i.name not in inits]
    if missing:
        return {"status": "blocked", "ops": missing}
    try:
        module = convert(proto).eval()
    except Exception as e:
        return {"status": "no convert", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    worst = 0.0
    try:
        for feed, ref in zip(feeds, refs, strict=True):
            with torch.no_grad():
                out = module(*[torch.from_numpy(np.array(feed[k])) for k in order])
            out = out if isinstance(out, (tuple, list)) else [out]
            for o, r in zip(out, ref, strict=False):
                if isinstance(r, np.ndarray) and r.dtype.kind in "fiub":
                    worst = max(worst, rel_error(o.detach().numpy(), r))
    except Exception as e:
        return {"status": "converts, fails to run", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    return {"status": "runs", "rel_error": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", type=Path, default=Path("/tmp/onnxcomp-distill-forms"))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--make", action="store_true", help="write missing forms first")
    parser.add_argument("--onnx2torch", action="store_true", help="also score onnx2torch")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    rows = []
    for name, (model_path, calib) in models(args.forms).items():
        if args.only and name not in args.only.split(","):
            continue
        if args.make:
            make_forms(name, model_path, calib, args.forms)
        fp32 = load(model_path)
        feeds = samples(fp32, calib, args.samples)
        for form in FORMS:
            path = model_path if form == "fp32" else args.forms / name / f"{form}.onnx"
            if not path.exists():
                err = args.forms / name / f"{form}.err"
                why = err.read_text().strip().splitlines()[-1:] if err.exists() else ["not made"]
                rows.append(
                    {
                        "model": name,
                        "form": form,
                        "ours": {"status": "no form", "error": why[0][:200]},
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                continue
            try:
                names, refs = reference(path, feeds)
            except Exception as e:
                rows.append(
                    {
                        "model": name,
                        "form": form,
                        "ours": {"status": "ort fails", "error": str(e)[:200]},
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                continue
            row = {"model": name, "form": form, "ours": ours(path, feeds, names, refs)}
            row["ort_cpu_s_per_sample"] = REFERENCE_SECONDS[str(path)]
            if row["ours"]["status"] == "runs" and form != "fp32":
                try:
                    row["ours"].update(nodewise(path, feeds[0]))
                except Exception as e:
                    row["ours"]["nodewise"] = f"{type(e).__name__}: {str(e)[:200]}"
            if args.onnx2torch:
                row["onnx2torch"] = theirs(path, feeds, names, refs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def speed(path: Path, calib: Path, batch: int, repeats: int, threads: int = 1) -> dict[str, float]:
    """Forward+backward CPU seconds per sample through the table (every float initializer a
    parameter, the loss the outputs' mean square), against onnxruntime's forward alone.

    One thread by default: on a loaded machine torch's idle threads spin and bill CPU time
    that does no work, so one thread's CPU time is the honest figure."""
    import torch

    torch.set_num_threads(threads)
    from onnxcomp.methods.distill.ops.common import tensor_of
    from onnxcomp.methods.distill.optable import run_graph

    model = load(path)
    # weights exported as Constant nodes (Paddle) become initializers, as compress does
    ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    feeds = samples(model, calib, batch)
    if any(f[k].shape != feeds[0][k].shape for f in feeds for k in f):  # ragged: the first
        feeds = feeds[:1] * batch
    feed = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    params = {}
    for n, v in model.graph.initializers.items():
        if v.const_value is None:
            continue
        t = tensor_of(v.const_value.numpy())
        params[n] = torch.nn.Parameter(t) if t.is_floating_point() else t
    n_params = sum(p.numel() for p in params.values() if isinstance(p, torch.nn.Parameter))
    inputs = {k: torch.from_numpy(np.array(v)) for k, v in feed.items()}
    outs = [o.name for o in model.graph.outputs]
    run_graph(model.graph, {**params, **inputs})  # compile once, outside the timing
    fwd = bwd = 0.0
    for _ in range(repeats):
        start = time.process_time()
        env = run_graph(model.graph, {**params, **inputs})
        loss = sum((env[o].float() ** 2).mean() for o in outs if env[o].is_floating_point())
        mid = time.process_time()
        loss.backward()  # type: ignore[union-attr]
        fwd += mid - start
        bwd += time.process_time() - mid
    reference(path, [feed])
    per = batch * repeats
    return {
        "params": n_params, "batch": batch, "torch_threads": torch.get_num_threads(),
        "forward_s_per_sample": fwd / per, "backward_s_per_sample": bwd / per,
        "ort_forward_s_per_sample": REFERENCE_SECONDS[str(path)] / batch,
        "epoch_1000_minutes": (fwd + bwd) / per * 1000 / 60, "load": os.getloadavg()[0],
    }  # fmt: skip
