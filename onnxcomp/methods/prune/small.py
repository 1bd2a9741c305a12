"""Per-tensor sparsity leaves the smallest weights dense.

A target sparsity taken from every tensor alike takes 30% of YOLOv8's DFL Conv, a
16-weight ``arange(16)`` that decodes box distances: its five smallest (0..4) zeroed
moved every box and took the layout detector's F1 against fp32 from 0.93 (SparseGPT,
the rest pruned) to 0.16, to save 20 bytes. The same share rule as the low-bit guard
(methods/weights/small_weights.py): a weight whose pruned elements are under
``SMALL_SHARE`` of the parameter bytes stays dense unless a recipe layer names it.
A global ranking needs no guard (it cuts by magnitude over all weights together).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from onnxcomp.graph.weights import Weight
from onnxcomp.methods.weights.small_weights import SMALL_SHARE, first_names


def dense_small(
    weights: Sequence[Weight],
    sparsity: float,
    total_bytes: int,
    include: Callable[[Weight], bool],
    named: dict[str, float],
) -> list[str]:
    """Names of the weights ``sparsity`` would cut under SMALL_SHARE of ``total_bytes``."""
    out = []
    for w in weights:
        if w.name in named or not include(w):
            continue
        tensor = w.value.const_value
        if tensor is not None and sparsity * tensor.nbytes < SMALL_SHARE * total_bytes:
            out.append(w.name)
    return out


def dense_note(names: Sequence[str]) -> str | None:
    if not names:
        return None
    return (
        f"{len(names)} small weights left dense (their pruned share would be under "
        f"{SMALL_SHARE:.1%} of the parameter bytes each; a recipe layer sets "
        f"prune_sparsity to force it): {first_names(names)}"
    )
