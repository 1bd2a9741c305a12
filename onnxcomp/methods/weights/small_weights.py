"""Guards for weights where few bits buy nothing and cost the task.

A first Conv of 216 weights given one 16-value codebook took a wake-word detector from
0.794 to 0.500 balanced accuracy to save under 0.1% of the file. A weight whose saving
below 8 bits is under ``SMALL_SHARE`` of the model's parameter bytes keeps 8 bits
unless a recipe names it. Without calibration data nothing shows how a layer's error
reaches the outputs, so a layer whose error on isotropic inputs (``||W' - W|| / ||W||``)
passes ``UNCALIBRATED_ERROR`` is named in a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnxcomp.graph.weights import Weight

SMALL_SHARE = 1e-3
# 4-bit codebooks and int4 blocks leave 10-18% per layer: without data nothing tells a
# model that shrugs that off (a text classifier, -2 points) from one it breaks (CenterFace
# PCK 1.0 -> 0.05, a YOLOv8 layout detector F1 -> 0.10, PaddleOCR's recognizer -> 0.00).
UNCALIBRATED_ERROR = 0.10


def saving_is_small(weight: Weight, bits: int, total_bytes: int) -> bool:
    """Whether storing ``weight`` at ``bits`` instead of 8 saves under SMALL_SHARE."""
    saved = weight.array.size * max(8 - bits, 0) / 8.0
    return saved < SMALL_SHARE * total_bytes


def first_names(names: Sequence[str]) -> str:
    """The first five names in order, and "..." when there are more (notes stay short)."""
    more = ", ..." if len(names) > 5 else ""
    return f"{', '.join(sorted(names)[:5])}{more}"


def small_note(names: Sequence[str], bits: int) -> str | None:
    if not names:
        return None
    return (
        f"{len(names)} small weights kept at 8 bits instead of {bits} (saving under "
        f"{SMALL_SHARE:.1%} of the parameter bytes each; a recipe layer sets bits/precision "
        f"to force it): {first_names(names)}"
    )


def uncalibrated_warning(records: Sequence, what: str) -> str | None:
    """A warning naming the layers whose weight error passes UNCALIBRATED_ERROR."""
    loud = [
        (r.name, r.relative_error)
        for r in records
        if r.relative_error is not None and r.relative_error > UNCALIBRATED_ERROR
    ]
    if not loud:
        return None
    loud.sort(key=lambda x: -x[1])
    named = ", ".join(f"{n} ({e:.0%})" for n, e in loud[:5]) + (", ..." if len(loud) > 5 else "")
    return (
        f"warning: {what} without --calib: {len(loud)} layers have a weight error above "
        f"{UNCALIBRATED_ERROR:.0%} of their weights' norm, which may cost the task: {named}; "
        "give --calib DATA (error-aware codes), --exclude them, or check the result with "
        "onnxcomp check --task"
    )


# Largest worst-component error on synthetic inputs a low-bit run without calibration
# data writes without a warning: per-layer errors of ~10% each stayed under
# UNCALIBRATED_ERROR on a 4-bit CenterFace, yet together took its landmarks from PCK
# 1.0 to 0.05.
SYNTHETIC_TOLERANCE = 0.1
SYNTHETIC_BATCHES = 4


def synthetic_output_warning(
    original: Any, compressed: Any, records: Sequence, what: str
) -> str | None:
    """Both files run on random inputs made from the declared shapes (dynamic dims: 1
    for the batch, 64 elsewhere); a warning naming the loudest layers when the worst
    output component moved past SYNTHETIC_TOLERANCE. None when it did not, or when the
    model cannot run on such inputs (nothing is claimed then)."""
    import numpy as np

    from onnxcomp.io.data import input_specs
    from onnxcomp.io.model_io import load
    from onnxcomp.metrics import Judge
    from onnxcomp.metrics.judge import declared_shapes
    from onnxcomp.runtime.session import make_session

    try:
        ref, new = make_session(str(original)), make_session(str(compressed))
        specs = input_specs(load(original))
        rng = np.random.default_rng(0)
        judge = Judge([o.name for o in ref.get_outputs()], detect=False,
                      declared=declared_shapes(ref))  # fmt: skip
        for _ in range(SYNTHETIC_BATCHES):
            feed = {}
            for s in specs:
                shape = tuple(
                    d if isinstance(d, int) and d > 0 else (1 if i == 0 else 64)
                    for i, d in enumerate(s.shape)
                )
                if s.dtype.kind == "f":
                    feed[s.name] = rng.standard_normal(shape).astype(s.dtype)
                else:
                    feed[s.name] = rng.integers(0, 2, shape).astype(s.dtype)
            judge.update(ref.run(None, feed), new.run(None, feed), feed=feed)
        moved, _ = judge.verdict().gauge()
    except Exception:  # a model that needs real inputs: this check says nothing
        return None
    if moved <= SYNTHETIC_TOLERANCE:
        return None
    loud = sorted(
        (r for r in records if r.relative_error is not None), key=lambda r: -r.relative_error
    )[:5]
    named = ", ".join(f"{r.name} ({r.relative_error:.0%})" for r in loud)
    return (
        f"warning: {what} without --calib moved the outputs on random inputs (worst "
        f"component error {min(moved, 1.0):.2f} > {SYNTHETIC_TOLERANCE}); the layers it "
        f"rounded most: {named}; give --calib DATA, --exclude them, or check the result "
        "with onnxcomp check --task"
    )
