"""Would check have passed it? The old whole-tensor gate against the task-aware one, on
the real corpus, beside each model's own task metric.

Per corpus model and mode: the task metric of the fp32 and compressed files (the
package's own post-processing or labels, benchmarks/corpus), the old global cosine (the
worst output's mean per-sample cosine), the worst output component and its error, and
whether ``onnxcomp check --max-drop X`` passed the file before (1 - worst top-1 agreement,
else 1 - worst global cosine) and now (the detected task or worst component; and with
the model's ``--task``). A file is *beyond budget* when its task metric lost more than X.

    python -m benchmarks.fidelity [--models a,b] [--modes weights,int8,...] [--max-drop 0.02]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

# The --task (and --task-arg) each corpus model is read with: how its outputs are used.
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "paddle-ocr-rec": ("sequence", ()),
    "ddddocr-captcha": ("sequence", ()),
    "paddle-ocr-cls": ("classify", ()),
    "paddle-ocr-det": ("segment", ("threshold=0.3",)),  # DB's probability-map threshold
    "magika": ("classify", ()),
    "sklearn-digits": ("classify", ()),
    "minilm-l3": ("embed", ("output=461",)),
    "silero-vad": ("threshold", ("output=output",)),
    "silero-vad-op15": ("threshold", ("output=output",)),
    "silero-vad-op18": ("threshold", ("output=output",)),
    "silero-vad-seq": ("threshold", ("output=speech_probs",)),
    "doclaynet-yolov8n": ("detect", ()),
    "centerface-landmarks": ("segment", ("output=537", "threshold=0.5")),
}
MODES: dict[str, dict[str, Any]] = {
    "weights": {"quantize": "weights"},
    "int8": {"quantize": "int8", "calib": True},
    "codebook4": {"quantize": "codebook", "bits": 4, "pack": True},
    "codebook4-calib": {"quantize": "codebook", "bits": 4, "pack": True, "calib": True},
    "int4": {"quantize": "int4", "calib": True},
}


def old_drop(result) -> float | None:
    """What check gated on before: 1 - worst top-1 agreement, else 1 - worst cosine."""
    agreements = [o.top1_agreement for o in result.outputs if o.top1_agreement is not None]
    if agreements:
        return 1.0 - min(agreements)
    cosines = [o.cosine for o in result.outputs if o.cosine is not None]
    return 1.0 - min(cosines) if cosines else None


def row(name: str, mode: str, max_drop: float, work: Path) -> dict[str, Any]:
    from benchmarks.corpus import prepare, registry
    from onnxcomp import compress
    from onnxcomp.check import check

    spec, prep = registry()[name], prepare(name)
    options = dict(MODES[mode])
    if options.pop("calib", False):
        options["calib"] = str(prep.calib)
    out = work / f"{name}-{mode}.onnx"
    start = time.process_time()
    compressed = compress(prep.model, out, **options)
    seconds = time.process_time() - start
    base = spec.score(prep.model, prep, 1)
    new = spec.score(out, prep, 1)
    plain = check(prep.model, out, data=str(prep.eval), runs=0, max_drop=max_drop)
    task, args = TASKS.get(name, (None, ()))
    judged = (
        check(prep.model, out, data=str(prep.eval), runs=0, max_drop=max_drop, task=task,
              task_arg=args)
        if task else plain
    )  # fmt: skip
    before = old_drop(plain)
    worst = max(
        (o for o in plain.outputs if o.worst_component_error is not None),
        key=lambda o: o.worst_component_error or 0.0,
        default=None,
    )
    loss = base.value - new.value
    return {
        "model": name,
        "mode": mode,
        "metric": spec.metric,
        "fp32": base.value,
        "compressed": new.value,
        "loss": loss,
        "beyond_budget": loss > max_drop,
        "bytes": out.stat().st_size,
        "bytes_fp32": Path(prep.model).stat().st_size,
        "cpu_s": seconds,
        "global_cosine": min(
            (o.cosine for o in plain.outputs if o.cosine is not None), default=None
        ),
        "worst_component": worst.worst_component if worst else None,
        "worst_component_error": worst.worst_component_error if worst else None,
        "old_drop": before,
        "old_pass": before is not None and before <= max_drop + 1e-12,
        "default_metric": plain.metric,
        "default_drop": plain.drop,
        "default_pass": plain.passed,
        "task": task,
        "task_metric": judged.metric,
        "task_drop": judged.drop,
        "task_pass": judged.passed,
        "warnings": [n for n in compressed.notes if n.startswith("warning:")],
    }


def markdown(rows: list[dict[str, Any]], max_drop: float) -> str:
    head = (
        f"| model | mode | task metric fp32 -> compressed (loss, pts) | old global cosine | "
        f"worst component (error) | check --max-drop {max_drop} before / now (default) / "
        f"now (--task) | task drop |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['mode']} | failed: {r['error']} | | | | |")
            continue
        mark = lambda ok: "pass" if ok else "FAIL"  # noqa: E731
        beyond = " **beyond budget**" if r["beyond_budget"] else ""
        cos = "n/a" if r["global_cosine"] is None else f"{r['global_cosine']:.5f}"
        worst = (
            "n/a" if r["worst_component"] is None
            else f"{r['worst_component']} ({r['worst_component_error']:.3g})"
        )  # fmt: skip
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['metric']} {r['fp32']:.3f} -> "
            f"{r['compressed']:.3f} ({100 * r['loss']:+.1f}){beyond} | {cos} | {worst} | "
            f"{mark(r['old_pass'])} / {mark(r['default_pass'])} / {mark(r['task_pass'])} | "
            f"{r['task'] or '-'}: {r['task_drop']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.corpus import registry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(registry()))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--max-drop", type=float, default=0.02)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for mode in args.modes.split(","):
                try:
                    rows.append(row(name, mode, args.max_drop, Path(tmp)))
                except Exception as exc:  # one failure must not hide the other rows
                    rows.append({"model": name, "mode": mode, "error": str(exc)[:200]})
                print(markdown(rows[-1:], args.max_drop).splitlines()[-1], flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    print(markdown(rows, args.max_drop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
