"""The README's digits-demo distill rows, with and without blended inputs.

    python -m benchmarks.distill_digits

Four compressions of the demo's digits MLP, each `--recover distill` with
``distill_mix`` on and off: test accuracy (360 digits) and the written bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.distill import CACHE, _digits, _digits_accuracy
from onnxcomp import compress

CONFIGS: dict[str, dict[str, Any]] = {
    "codebook2-sparse75-pack": {
        "quantize": "codebook", "bits": 2, "prune_sparsity": 0.75, "pack": True,
    },
    "prune80-weights": {"prune_sparsity": 0.8, "quantize": "weights"},
    "prune75": {"prune_sparsity": 0.75},
    "int8-prune50": {"quantize": "int8", "prune_sparsity": 0.5, "measure": "off"},
}  # fmt: skip


def main() -> None:
    model, calib, test = _digits()
    out = CACHE / "digits-rows"
    out.mkdir(parents=True, exist_ok=True)
    for name, kwargs in CONFIGS.items():
        for mix in (True, False):
            path = Path(out / f"{name}-{'mix' if mix else 'nomix'}.onnx")
            result = compress(
                model, path, calib=str(calib), recover="distill", distill_mix=mix, **kwargs
            )
            accuracy = _digits_accuracy(path, test)
            kind = "blended" if mix else "plain"
            print(f"{name} {kind}: {accuracy:.4f}, {result.output_bytes} B")


if __name__ == "__main__":
    main()
