"""int4 on transformers: onnxcomp int4 (RTN, GPTQ, GPTQ + AWQ) and int8 (with and without
SmoothQuant) vs fp32 and onnxruntime's MatMulNBitsQuantizer (RTN default, and its GPTQ),
same run: file bytes, task metric, latency at 1 and 2 threads.

    python -m benchmarks.int4_transformers [minilm-l3] [bert4]

minilm-l3 is the real MiniLM export of the corpus (metric: its recall@1); bert4 is the
zoo's random-weight encoder (metric: mean output cosine to fp32, speed only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks import measure, zoo
from onnxcomp.pipeline.compress import compress

HERE = Path(__file__).parent


def ort_nbits(src: Path, out: Path, block_size: int = 128, calib: str | None = None) -> None:
    """onnxruntime's own 4-bit quantizer: its defaults (RTN, asymmetric, block 128), or
    with ``calib`` its GPTQ (onnxruntime's vendored copy; HQQ needs torch: not run)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        GPTQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    algo = None
    if calib is not None:
        algo = GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(src, calib))
    q = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=block_size, algo_config=algo)
    q.process()
    q.model.save_model_to_file(str(out), use_external_data_format=False)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over our calibration data (its GPTQ
    iterates the reader and deep-copies it, so it is also an iterable of feeds)."""

    def __init__(self, model: Path, calib: str) -> None:
        from onnxcomp.io import model_io
        from onnxcomp.io.data import input_specs, open_data

        data = open_data(calib, input_specs(model_io.load(model)))
        self.feeds = [b.feed for b in data]
        self.at = 0

    def get_next(self):
        self.at += 1
        return self.feeds[self.at - 1] if self.at <= len(self.feeds) else None

    def rewind(self) -> None:
        self.at = 0

    def __iter__(self):
        return iter(self.feeds)


def variants(src: Path, calib: str, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {"fp32": src}
    jobs = {
        "onnxcomp-weights": dict(quantize="weights"),
        "onnxcomp-int8": dict(quantize="int8", calib=calib),
        "onnxcomp-int4-rtn": dict(quantize="int4"),
        "onnxcomp-int8-smoothquant": dict(quantize="int8", calib=calib, smoothquant=True),
        "onnxcomp-int4-gptq-noawq": dict(quantize="int4", calib=calib, awq=False),
        "onnxcomp-int4-gptq": dict(quantize="int4", calib=calib),
        "onnxcomp-int4-gptq-bs64": dict(quantize="int4", calib=calib, block_size=64),
    }
    for name, opts in jobs.items():
        path = folder / f"{name}.onnx"
        res = compress(src, path, progress=False, **opts)
        print(f"# {name}: " + " | ".join(res.notes), flush=True)
        out[name] = path
    path = folder / "ort-matmulnbits.onnx"
    ort_nbits(src, path)
    out["ort-matmulnbits"] = path
    path = folder / "ort-matmulnbits-gptq.onnx"
    try:
        ort_nbits(src, path, calib=calib)
        out["ort-matmulnbits-gptq"] = path
    except Exception as exc:  # its failure is a result, not ours to hide
        print(f"# ort-matmulnbits-gptq failed: {type(exc).__name__}: {exc}"[:300], flush=True)
    return out


def cosine_metric(paths: dict[str, Path], eval_npz: Path, output: str) -> dict[str, float]:
    ref = measure.session(paths["fp32"], 2)
    batches = measure.eval_batches(eval_npz, ref, 64, None)
    want = [ref.run([output], f)[0] for f, _ in batches]
    scores = {}
    for name, path in paths.items():
        sess = measure.session(path, 2)
        got = [sess.run([output], f)[0] for f, _ in batches]
        cos = [
            float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
            for a, b in zip(want, got, strict=True)
        ]
        scores[name] = float(np.mean(cos))
    return scores


def run(name: str, budget: float) -> list[dict]:
    if name == "minilm-l3":
        from benchmarks.corpus import prepare, registry

        prepared = prepare(name)
        src = Path(prepared.model)
        paths = variants(src, str(prepared.calib), HERE / ".cache" / "int4" / name)
        entry = registry()[name]
        scores = {k: entry.score(str(p), prepared, 1) for k, p in paths.items()}
        metric = {k: s.value for k, s in scores.items()}
        extra = {k: s.extra or {} for k, s in scores.items()}
        ref = measure.session(src, 1)
        calib_files = sorted(Path(prepared.calib).glob("*.npz"))
        with np.load(calib_files[0]) as data:
            feed = {i.name: data[i.name] for i in ref.get_inputs()}
    else:
        built = zoo.build(name, HERE / ".cache")
        paths = variants(built.model, str(built.calib), HERE / ".cache" / "int4" / name)
        metric = cosine_metric(paths, built.eval, built.output)
        extra = {}
        ref = measure.session(built.model, 1)
        feed = measure.eval_batches(built.eval, ref, 1, None)[0][0]
    rows = []
    lat = {
        t: measure.latency(paths, feed, threads=t, max_runs=300, budget_s=budget) for t in (1, 2)
    }
    fp32_bytes = paths["fp32"].stat().st_size
    for k, p in paths.items():
        rows.append(
            {
                "model": name,
                "variant": k,
                "bytes": p.stat().st_size,
                "size_ratio": round(p.stat().st_size / fp32_bytes, 4),
                "metric": round(metric[k], 5),
                **{m: round(v, 5) for m, v in extra.get(k, {}).items()},
                "ms_1t": round(lat[1][k].get("median_ms", float("nan")), 3),
                "ms_2t": round(lat[2][k].get("median_ms", float("nan")), 3),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="*", default=["minilm-l3", "bert4"])
    p.add_argument("--budget", type=float, default=20.0)
    args = p.parse_args()
    for name in args.models:
        for row in run(name, args.budget):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
