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

from onnxcomp.graph.weights import Weight

SMALL_SHARE = 1e-3
UNCALIBRATED_ERROR = 0.15


def saving_is_small(weight: Weight, bits: int, total_bytes: int) -> bool:
    """Whether storing ``weight`` at ``bits`` instead of 8 saves under SMALL_SHARE."""
    saved = weight.array.size * max(8 - bits, 0) / 8.0
    return saved < SMALL_SHARE * total_bytes


def small_note(names: Sequence[str], bits: int) -> str | None:
    if not names:
        return None
    more = ", ..." if len(names) > 5 else ""
    return (
        f"{len(names)} small weights kept at 8 bits instead of {bits} (saving under "
        f"{SMALL_SHARE:.1%} of the parameter bytes each; a recipe layer sets bits/precision "
        f"to force it): {', '.join(sorted(names)[:5])}{more}"
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
