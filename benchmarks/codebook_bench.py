"""Codebook + packing on real models: size, task metric, load cost, latency.

``python -m benchmarks.codebook_bench MODEL CONFIG...`` where MODEL is a corpus name
(``minilm-l3``, ``paddle-ocr-cls``...) or ``digits`` (the demo MLP), and each CONFIG is
``key=value,key=value`` of CompressOptions (``quantize=codebook,bits=3,pack=1``;
``layer:NAME=S`` a layer's sparsity, ``bits:NAME=N`` its codebook bits).
Prints one Markdown row per model file: raw bytes and ratio to fp32, zlib-deflated
bytes, the task metric, session creation time and peak RSS (in a fresh process),
median latency vs fp32, and compression time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

LOAD_PROBE = """
import json, resource, sys, time, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.log_severity_level = 3; o.intra_op_num_threads = 1
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
load = time.perf_counter() - t
feed = dict(np.load(sys.argv[2]))
names = {i.name for i in s.get_inputs()}
feed = {k: v for k, v in feed.items() if k in names}
s.run(None, feed)
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); s.run(None, feed); times.append(time.perf_counter() - t)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ms = 1e3 * float(np.median(times))
print(json.dumps({"load_s": load, "rss_mb": rss / 1024, "latency_ms": ms}))
"""


def probe(model: Path, feed: Path, runs: int = 20) -> dict:
    """Session creation time, peak RSS and median latency, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, str(model), str(feed), str(runs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def deflated(path: Path) -> int:
    return len(zlib.compress(path.read_bytes(), 9))


def parse(config: str) -> dict:
    opts: dict = {}
    for item in filter(None, config.split(",")):
        key, value = item.split("=", 1)
        if key in ("pack", "global_prune"):
            opts[key] = value not in ("0", "false")
        elif key in ("bits",):
            opts[key] = int(value)
        elif key in ("prune_sparsity",):
            opts[key] = float(value)
        elif key.startswith("layer:"):  # layer:NAME=S sets that layer's sparsity
            from onnxcomp.pipeline.layers import LayerOptions

            opts.setdefault("layers", {})[key[6:]] = LayerOptions(prune_sparsity=float(value))
        elif key.startswith("bits:"):  # bits:NAME=N sets that layer's codebook bits
            from onnxcomp.pipeline.layers import LayerOptions

            opts.setdefault("layers", {})[key[5:]] = LayerOptions(bits=int(value))
        else:
            opts[key] = value
    return opts


def _digits(folder: Path):
    from onnxcomp.cli.demo import build_digits

    model, test, calib = build_digits(folder)
    data = np.load(test)

    def score(path: Path) -> float:
        import onnxruntime as ort

        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return float((s.run(None, {"pixels": data["pixels"]})[0].argmax(1) == data["label"]).mean())

    return model, calib, test, score, "accuracy"


def _corpus(name: str):
    from benchmarks.corpus import prepare, registry

    p = prepare(name)
    real = registry()[name]
    feed = sorted(Path(p.eval).glob("*.npz"))[0]

    def score(path: Path) -> float:
        return float(real.score(path, p, 1).value)

    metric = real.score(p.model, p, 1).metric
    return Path(p.model), Path(p.calib), feed, score, metric


def main(argv: list[str]) -> None:
    from onnxcomp.pipeline.compress import CompressOptions, compress

    name, configs = argv[0], argv[1:]
    work = Path(tempfile.mkdtemp(prefix=f"cb-{name}-"))
    model, calib, feed, score, metric = _digits(work) if name == "digits" else _corpus(name)
    fp32 = model.stat().st_size
    base = probe(model, feed)
    ref = score(model)
    print(f"| {name} config | raw B | ratio | deflated B | {metric} | load s | RSS MB | "
          "latency vs fp32 | compress s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| fp32 | {fp32:,} | 1 | {deflated(model):,} | {ref:.4f} | {base['load_s']:.3f} | "
          f"{base['rss_mb']:.0f} | 1.00 ({base['latency_ms']:.2f} ms) | - |")  # fmt: skip
    for i, config in enumerate(configs):
        opts = parse(config)
        if opts.get("calib") == "1":
            opts["calib"] = str(calib)
        out = work / f"c{i}.onnx"
        start = time.perf_counter()
        r = compress(model, out, CompressOptions(progress=False, allow_larger=True, **opts))
        seconds = time.perf_counter() - start
        p = probe(out, feed)
        s = score(out)
        print(
            f"| {config} | {r.output_bytes:,} | {r.output_bytes / fp32:.4f} | "
            f"{deflated(out):,} | {s:.4f} ({s - ref:+.4f}) | {p['load_s']:.3f} | "
            f"{p['rss_mb']:.0f} | {p['latency_ms'] / base['latency_ms']:.2f} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
