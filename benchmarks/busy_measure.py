"""The int8 measure step under load: do its decisions, and the file's speed, survive four
busy processes on the machine's cores?

Per model: ``compress --quantize int8 --measure fresh`` once as the machine is, once with
``--busy`` spinning processes running; then both files and fp32 are timed afterwards
(interleaved, 1 thread, this thread's CPU time so the timing itself is load-proof) and the
op-family decisions compared.

    python -m benchmarks.busy_measure [--models shufflenet,resnet50,paddle-ocr-cls,...]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import session


def _spin(stop: float) -> None:
    x = 0
    while time.time() < stop:
        x = (x * 1103515245 + 12345) % 2147483648


def busy(n: int, seconds: float) -> list[mp.Process]:
    """``n`` processes spinning for at most ``seconds`` (they end by themselves)."""
    procs = [mp.Process(target=_spin, args=(time.time() + seconds,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def source(name: str, cache: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(model, calibration data, one timing feed) of a zoo or corpus model."""
    from benchmarks import zoo

    if name in zoo.MODELS:
        built = zoo.build(name, cache)
        with np.load(built.calib) as d:
            feed = {k: d[k][:1] for k in d.files}
        return built.model, built.calib, feed
    from benchmarks.corpus import prepare

    prep = prepare(name)
    first = sorted(prep.eval.glob("*.npz"))[0]
    with np.load(first) as d:
        feed = {k: d[k] for k in d.files}
    return prep.model, prep.calib, feed


def cpu_ratio(a: Path, b: Path, feed: dict[str, np.ndarray], rounds: int = 40) -> float:
    """Median thread-CPU time of ``b`` over ``a``, runs interleaved."""
    sa, sb = session(a, 1), session(b, 1)
    names = {i.name for i in sa.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in names}
    for s in (sa, sb):
        s.run(None, feed)
    ta, tb = [], []
    for _ in range(rounds):
        for s, t in ((sa, ta), (sb, tb)):
            c = time.thread_time()
            s.run(None, feed)
            t.append(time.thread_time() - c)
    return float(np.median(tb) / np.median(ta))


def row(name: str, procs: int, cache: Path, work: Path) -> dict[str, Any]:
    from onnxcomp import compress

    model, calib, feed = source(name, cache)
    out: dict[str, Any] = {"model": name}
    decisions: dict[str, set[str]] = {}
    considered: set[str] = set()
    for label, load in (("as is", 0), ("busy", procs)):
        spinners = busy(load, 900) if load else []
        try:
            if load:
                time.sleep(5)  # let the spinners raise the load before measuring
            out[f"{label} load"] = os.getloadavg()[0]
            path = work / f"{name}-{label.replace(' ', '')}.onnx"
            res = compress(model, path, quantize="int8", calib=str(calib), measure="fresh")
            decisions[label] = set(res.activations.get("families", []))
            considered |= decisions[label] | set(res.activations.get("families_dropped", {}))
            out[f"{label} notes"] = [n for n in res.notes if "busy" in n or "op families" in n]
        finally:
            for p in spinners:
                p.terminate()
        out[f"{label} int8/fp32 cpu"] = cpu_ratio(model, path, feed)
    # The decisions are per family the measure step weighed (kept or dropped).
    out["decisions"] = len(considered)
    out["same"] = sum((f in decisions["as is"]) == (f in decisions["busy"]) for f in considered)
    out["families as is"] = sorted(decisions["as is"])
    out["families busy"] = sorted(decisions["busy"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shufflenet,resnet50,paddle-ocr-cls,paddle-ocr-rec")
    parser.add_argument("--busy", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "onnxcomp-bench")
    args = parser.parse_args(argv)
    print("| model | int8/fp32 CPU time as is / busy | int8 kept as is | busy | same | load |")
    print("|---|---|---|---|---|---|")
    same = decided = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            try:
                r = row(name, args.busy, args.cache, Path(tmp))
            except Exception as exc:  # one model's failure must not hide the others
                print(f"| {name} | failed: {str(exc)[:120]} | | | | |")
                continue
            print(
                f"| {name} | {r['as is int8/fp32 cpu']:.2f}x / {r['busy int8/fp32 cpu']:.2f}x | "
                f"{' '.join(r['families as is'])} | {' '.join(r['families busy'])} | "
                f"{r['same']}/{r['decisions']} | {r['as is load']:.1f} / {r['busy load']:.1f} |",
                flush=True,
            )
            same, decided = same + r["same"], decided + r["decisions"]
    print(f"\nsame decisions: {same}/{decided} families ({same / max(decided, 1):.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
