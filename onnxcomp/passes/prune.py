"""Magnitude pruning: small weight elements become exactly zero.

Two rules: a threshold (|w| <= eps) or a target sparsity, per tensor or ranked over all
weights together (``global_``). Sparsity is met exactly: ties at the cut are broken by
element order, so the same model always loses the same elements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxcomp.options import validate_prune
from onnxcomp.weights import Weight, find_weights

if TYPE_CHECKING:
    from onnxcomp.passes.report import CompressReport

logger = logging.getLogger(__name__)


@dataclass
class PruneRecord:
    name: str
    op_types: list[str]
    size: int
    zeros_before: int
    zeros_after: int

    @property
    def sparsity(self) -> float:
        return self.zeros_after / self.size if self.size else 0.0


class MagnitudePrunePass(ir.passes.InPlacePass):
    """Zero the smallest-magnitude elements of every weight the filter accepts."""

    def __init__(
        self,
        *,
        threshold: float | None = None,
        sparsity: float | None = None,
        global_: bool = False,
        include: Callable[[Weight], bool] = lambda w: True,
        per_weight_sparsity: dict[str, float] | None = None,
        report: CompressReport | None = None,
    ) -> None:
        super().__init__()
        validate_prune(threshold, sparsity)
        self.threshold = threshold
        self.sparsity = sparsity
        self.global_ = global_
        self.include = include
        # Filled by the pipeline once the model is known (per-layer settings): kept by identity.
        self.per_weight_sparsity = per_weight_sparsity if per_weight_sparsity is not None else {}
        self.records: list[PruneRecord] = []
        self.report = report

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        weights = [w for w in find_weights(model) if self.include(w)]
        self.records = []
        masks = self._masks(weights)
        modified = False
        for weight, mask in zip(weights, masks, strict=True):
            array = weight.array
            before = int(np.count_nonzero(array == 0))
            if mask is not None and mask.any():
                pruned = np.where(mask, np.zeros((), array.dtype), array)
                after = int(np.count_nonzero(pruned == 0))
                if after != before:
                    _replace(weight.value, pruned)
                    modified = True
            else:
                after = before
            self.records.append(
                PruneRecord(weight.name, weight.op_types, array.size, before, after)
            )
            logger.info("pruned %s: %d -> %d zeros of %d", weight.name, before, after, array.size)
        if self.report is not None:
            self.report.pruned += self.records
        return ir.passes.PassResult(model, modified=modified)

    def _masks(self, weights: list[Weight]) -> list[np.ndarray | None]:
        if self.threshold is not None:
            return [np.abs(w.array) <= self.threshold for w in weights]
        if self.global_ and self.sparsity is not None:
            return _global_masks([w.array for w in weights], self.sparsity)
        masks: list[np.ndarray | None] = []
        for w in weights:
            target = self.per_weight_sparsity.get(w.name, self.sparsity)
            masks.append(None if not target else sparsity_mask(w.array, target))
        return masks


def sparsity_mask(array: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask of exactly round(sparsity * size) smallest-|w| elements (ties by element order)."""
    if not array.size:
        return np.zeros(array.shape, bool)
    mask = _global_masks([array], sparsity)[0]
    assert mask is not None  # one mask per array given
    return mask


def _cut(scratch: np.ndarray, k: int) -> tuple[np.floating, int]:
    """The k-th smallest value of ``scratch`` (reordered in place: a selection, not a sort)
    and how many elements equal to it fall inside the k smallest."""
    scratch.partition(k - 1)
    cut = scratch[k - 1]
    below = int(np.count_nonzero(scratch[: k - 1] < cut))  # the rest of the k-1 equal it
    return cut, k - below


def _global_masks(arrays: list[np.ndarray], sparsity: float) -> list[np.ndarray | None]:
    """One ranking over all ``arrays``: the round(sparsity * total) smallest |w| go, ties
    broken by element order (the same elements a stable argsort picked).

    Memory: one float32 scratch of |w| for the selection, freed before the masks are made
    tensor by tensor (the argsort took 8 bytes of indices per element on top).
    """
    if not arrays:
        return []
    total = sum(a.size for a in arrays)
    k = round(sparsity * total)
    if k <= 0:
        return [np.zeros(a.shape, dtype=bool) for a in arrays]
    scratch = np.empty(total, np.float32)
    start = 0
    for a in arrays:
        np.abs(a.astype(np.float32, copy=False).ravel(), out=scratch[start : start + a.size])
        start += a.size
    cut, room = _cut(scratch, k)
    del scratch
    masks: list[np.ndarray | None] = []
    for a in arrays:
        magnitude = np.abs(a.astype(np.float32, copy=False)).ravel()
        mask = magnitude < cut
        if room > 0:
            ties = np.flatnonzero(magnitude == cut)[:room]
            mask[ties] = True
            room -= ties.size
        masks.append(mask.reshape(a.shape))
    return masks


def _replace(value: ir.Value, array: np.ndarray) -> None:
    value.const_value = ir.tensor(array, name=value.name)
