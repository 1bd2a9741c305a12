"""Magnitude pruning: small weight elements become exactly zero.

Two rules: a threshold (|w| <= eps) or a target sparsity, per tensor or ranked over all
weights together (``global_``). Sparsity is met exactly: ties at the cut are broken by
element order, so the same model always loses the same elements.

Memory: weights are read and written a block at a time (streaming.py) and the cut is
selected over the magnitudes' bit patterns in two passes over the blocks (a sample
brackets it, the bracket's few elements are partitioned), so a run holds the pruned
output and a few blocks, never a sorted or partitioned full-size copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.streaming import flat_blocks, release
from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.options import validate_prune
from onnxcomp.passes.report import CompressReport, PruneRecord

logger = logging.getLogger(__name__)


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
        shared = self._global_rule(weights)
        modified = False
        for weight in weights:
            rule = shared if shared is not None else self._rule(weight)
            modified |= self._prune(weight, rule)
        if self.report is not None:
            self.report.pruned += self.records
        return ir.passes.PassResult(model, modified=modified)

    def _global_rule(self, weights: list[Weight]) -> Rule | None:
        if self.threshold is not None or not (self.global_ and self.sparsity is not None):
            return None
        tensors = [w.value.const_value for w in weights]
        total = sum(t.size for t in tensors if t is not None)
        return _cut_rule(lambda: _chain_blocks(tensors), round(self.sparsity * total), total)

    def _rule(self, weight: Weight) -> Rule | None:
        if self.threshold is not None:
            limit = self.threshold
            return lambda block: np.abs(block) <= limit
        target = self.per_weight_sparsity.get(weight.name, self.sparsity)
        if not target:
            return None
        tensor = weight.value.const_value
        assert tensor is not None
        return _cut_rule(lambda: flat_blocks(tensor), round(target * tensor.size), tensor.size)

    def _prune(self, weight: Weight, rule: Rule | None) -> bool:
        """Zero what ``rule`` picks, block by block; True when the weight changed."""
        tensor = weight.value.const_value
        assert tensor is not None
        out = np.empty(tensor.size, tensor.dtype.numpy()) if rule is not None else None
        before = after = start = 0
        for block in flat_blocks(tensor):
            before += int(block.size - np.count_nonzero(block))
            if out is not None and rule is not None:
                part = out[start : start + block.size]
                _zero_where(block, rule(block), part)
                after += int(part.size - np.count_nonzero(part))
                start += block.size
        changed = out is not None and after != before
        if changed:
            assert out is not None
            weight.value.const_value = ir.tensor(
                out.reshape(tuple(tensor.shape.numpy())), name=weight.value.name
            )
            release(tensor)
        after = after if out is not None else before
        self.records.append(PruneRecord(weight.name, weight.op_types, tensor.size, before, after))
        logger.info("pruned %s: %d -> %d zeros of %d", weight.name, before, after, tensor.size)
        return changed


Rule = Callable[[np.ndarray], np.ndarray]  # a block of elements -> the mask of those to zero


def _zero_where(block: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    """``out = where(mask, +0.0, block)`` by bits: a random mask makes the branching
    forms (boolean assignment, np.where) several times slower."""
    bits = np.dtype(f"u{block.dtype.itemsize}")
    keep = mask.astype(bits)
    keep -= bits.type(1)  # all ones where kept, zero where pruned
    np.bitwise_and(block.view(bits), keep, out=out.view(bits))


def sparsity_mask(array: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask of exactly round(sparsity * size) smallest-|w| elements (ties by element order)."""
    if not array.size:
        return np.zeros(array.shape, bool)
    mask = _global_masks([array], sparsity)[0]
    assert mask is not None  # one mask per array given
    return mask


def _global_masks(arrays: list[np.ndarray], sparsity: float) -> list[np.ndarray | None]:
    """One ranking over all ``arrays``: the round(sparsity * total) smallest |w| go, ties
    broken by element order (the same elements a stable argsort picks)."""
    flats = [a.reshape(-1) for a in arrays]
    total = sum(a.size for a in flats)
    rule = _cut_rule(lambda: iter(flats), round(sparsity * total), total)
    if rule is None:
        return [np.zeros(a.shape, dtype=bool) for a in arrays]
    return [rule(f).reshape(a.shape) for f, a in zip(flats, arrays, strict=True)]


def _magnitude_keys(block: np.ndarray) -> np.ndarray:
    """|w| as float32 bit patterns: unsigned integers in the order of the magnitudes."""
    return block.astype(np.float32, copy=False).view(np.uint32) & np.uint32(0x7FFFFFFF)


def _cut_rule(blocks: Callable[[], Iterable[np.ndarray]], k: int, total: int) -> Rule | None:
    """A rule zeroing the ``k`` smallest magnitudes of the elements ``blocks()`` yields,
    when handed those same blocks in the same order (ties: the first ones).

    Exact, in two passes over the blocks: a strided sample brackets the k-th key, then
    one pass counts the keys below the bracket and keeps the few inside it, where the
    cut is selected. A bracket that misses (it cannot on ordinary weights) falls back
    to a radix selection (two histogram passes)."""
    if k <= 0:
        return None
    sample = _sample_keys(blocks(), max(1, total // _SAMPLE))
    found = _cut_in_bracket(blocks(), k, *_bracket(sample, k / total))
    if found is None:
        found = _radix_cut(blocks, k)
    key, smaller = found
    return _TakeBelow(key, k - smaller)


_SAMPLE = 1 << 20  # keys in the bracketing sample


def _sample_keys(blocks: Iterable[np.ndarray], stride: int) -> np.ndarray:
    parts = [_magnitude_keys(block[::stride]) for block in blocks]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint32)


def _bracket(sample: np.ndarray, quantile: float) -> tuple[np.uint32, np.uint32]:
    """Keys below and above the sample's ``quantile``, ~6 standard deviations apart."""
    m = sample.size
    at = quantile * m
    margin = 6.0 * (m * quantile * (1.0 - quantile)) ** 0.5 + 16
    lo = int(at - margin)
    hi = int(at + margin)
    low = sample[lo] if lo >= 0 else np.uint32(0)
    high = sample[hi] if hi < m else np.uint32(0xFFFFFFFF)
    return low, high


def _cut_in_bracket(
    blocks: Iterable[np.ndarray], k: int, low: np.uint32, high: np.uint32
) -> tuple[np.uint32, int] | None:
    """(k-th smallest key, how many keys are smaller), or None when it is outside."""
    below, inside = 0, []
    for block in blocks:
        keys = _magnitude_keys(block)
        below += int(np.count_nonzero(keys < low))
        inside.append(keys[(keys >= low) & (keys <= high)])
    window = np.concatenate(inside) if inside else np.zeros(0, np.uint32)
    rank = k - below - 1
    if not 0 <= rank < window.size:
        return None
    window.partition(rank)
    key = window[rank]
    return key, below + int(np.count_nonzero(window[:rank] < key))


def _radix_cut(blocks: Callable[[], Iterable[np.ndarray]], k: int) -> tuple[np.uint32, int]:
    """The same answer by histograms of the top 15 bits, then the low 16 of that bin."""
    high = np.zeros(1 << 15, np.int64)
    for block in blocks():
        high += np.bincount(_magnitude_keys(block) >> 16, minlength=1 << 15)
    cumulative = np.cumsum(high)
    top = int(np.searchsorted(cumulative, k))
    below = int(cumulative[top - 1]) if top else 0
    low = np.zeros(1 << 16, np.int64)
    for block in blocks():
        keys = _magnitude_keys(block)
        low += np.bincount(keys[(keys >> 16) == top] & 0xFFFF, minlength=1 << 16)
    cumulative = np.cumsum(low)
    bottom = int(np.searchsorted(cumulative, k - below))
    smaller = below + (int(cumulative[bottom - 1]) if bottom else 0)
    return np.uint32((top << 16) | bottom), smaller


class _TakeBelow:
    """Every element whose key is below ``key``, and the first ``room`` equal to it."""

    def __init__(self, key: np.uint32, room: int) -> None:
        self.key, self.room = key, room

    def __call__(self, block: np.ndarray) -> np.ndarray:
        keys = _magnitude_keys(block)
        mask = keys < self.key
        if self.room > 0:
            ties = np.flatnonzero(keys == self.key)[: self.room]
            mask[ties] = True
            self.room -= ties.size
        return mask


def _chain_blocks(tensors: list[ir.TensorProtocol | None]) -> Iterable[np.ndarray]:
    for tensor in tensors:
        if tensor is not None:
            yield from flat_blocks(tensor)
