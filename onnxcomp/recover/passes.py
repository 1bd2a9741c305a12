"""Recovery as drop-in passes for compress_model, and the hook that picks them.

``GPTQPass`` stands where QuantizeWeightsPass stood and ``SparseGPTPass`` where
MagnitudePrunePass stood: the layers they can rebuild get the data-aware treatment, every
other weight the plain one *first*, so the student the rebuilt layers see is the final
one. Records keep the plain passes' shapes, so reports need no special case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.data import DataSource, input_specs, open_data
from onnxcomp.passes.prune import MagnitudePrunePass, PruneRecord
from onnxcomp.passes.quantize_weights import QuantizeWeightsPass, QuantRecord
from onnxcomp.recover.bias_fold import correct_biases
from onnxcomp.recover.driver import RecoverRecord, rebuild
from onnxcomp.recover.layers import find_layers
from onnxcomp.weights import Weight


def _everything(weight: Weight) -> bool:
    return True


class GPTQPass(ir.passes.InPlacePass):
    """int8 weights by GPTQ where the layer allows it, plain rounding elsewhere."""

    def __init__(
        self,
        calib: DataSource,
        *,
        per_channel: bool = True,
        include: Callable[[Weight], bool] = _everything,
        bits: int = 8,
        threads: int = 0,
    ) -> None:
        super().__init__()
        self.calib, self.per_channel, self.include = calib, per_channel, include
        self.bits, self.threads = bits, threads
        self.records: list[QuantRecord] = []
        self.skipped: dict[str, str] = {}
        self.recovered: list[RecoverRecord] = []

    def requires(self, model: ir.Model) -> None:
        QuantizeWeightsPass(per_channel=self.per_channel).requires(model)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layers = find_layers(model, self.include)
        mine = {layer.weight.name for layer in layers}
        plain = QuantizeWeightsPass(
            per_channel=self.per_channel,
            include=lambda w: self.include(w) and w.name not in mine,
        )
        plain(model)
        self.skipped = {k: v for k, v in plain.skipped.items() if k not in mine}
        self.recovered, rebuilt = rebuild(
            model,
            layers,
            self.calib,
            "gptq",
            bits=self.bits,
            per_channel=self.per_channel,
            threads=self.threads,
        )
        self.records = plain.records + [r for r in rebuilt if isinstance(r, QuantRecord)]
        return ir.passes.PassResult(model, modified=bool(self.records))


class SparseGPTPass(ir.passes.InPlacePass):
    """Pruning by SparseGPT where the layer allows it, by magnitude elsewhere.

    Each rebuilt weight loses as many elements as magnitude pruning would have taken
    from it (the same threshold or sparsity), chosen and compensated on the data.
    """

    def __init__(
        self,
        calib: DataSource,
        *,
        threshold: float | None = None,
        sparsity: float | None = None,
        include: Callable[[Weight], bool] = _everything,
        threads: int = 0,
        per_weight_sparsity: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.calib, self.threshold, self.sparsity = calib, threshold, sparsity
        self.include, self.threads = include, threads
        self.per_weight_sparsity = per_weight_sparsity or {}
        self.records: list[PruneRecord] = []
        self.recovered: list[RecoverRecord] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layers = find_layers(model, self.include)
        mine = {layer.weight.name for layer in layers}
        counts = {w.name: self._count(w.name, w.array) for w in (la.weight for la in layers)}
        plain = MagnitudePrunePass(
            threshold=self.threshold,
            sparsity=self.sparsity,
            include=lambda w: self.include(w) and w.name not in mine,
            per_weight_sparsity=self.per_weight_sparsity,
        )
        plain(model)
        self.recovered, rebuilt = rebuild(
            model, layers, self.calib, "sparsegpt", counts=counts, threads=self.threads
        )
        self.records = plain.records + [r for r in rebuilt if isinstance(r, PruneRecord)]
        modified = any(r.zeros_after != r.zeros_before for r in self.records)
        return ir.passes.PassResult(model, modified=modified)

    def _count(self, name: str, array: np.ndarray) -> int:
        if self.threshold is not None:
            return int(np.count_nonzero(np.abs(array) <= self.threshold))
        return round(self.per_weight_sparsity.get(name, self.sparsity or 0.0) * array.size)


class Recovery:
    """compress_model's hook: swaps in the recovering passes and runs bias correction.

    Made right after prepare, so the teacher (a cheap clone sharing tensors) is the
    model before any compression.
    """

    def __init__(self, model: ir.Model, options: Any) -> None:
        self.method: str = options.recover
        self.calib = open_data(options.calib, input_specs(model))
        self.teacher = model.clone() if self.method == "bias" else None
        self._handed_out: list[GPTQPass | SparseGPTPass] = []

    def prune_pass(self, default: MagnitudePrunePass) -> ir.passes.InPlacePass:
        """SparseGPT in place of magnitude pruning (same options), or ``default``."""
        if self.method != "sparsegpt":
            return default
        p = SparseGPTPass(
            self.calib,
            threshold=default.threshold,
            sparsity=default.sparsity,
            include=default.include,
            per_weight_sparsity=default.per_weight_sparsity,
        )
        self._handed_out.append(p)
        return p

    def quantize_pass(self, default: QuantizeWeightsPass) -> ir.passes.InPlacePass:
        """GPTQ in place of plain weight rounding (same options), or ``default``."""
        if self.method != "gptq":
            return default
        p = GPTQPass(self.calib, per_channel=default.per_channel, include=default.include)
        self._handed_out.append(p)
        return p

    def finish(self, model: ir.Model) -> list[RecoverRecord]:
        """Bias correction (last, after every other change); returns all per-layer records."""
        records = [r for p in self._handed_out for r in p.recovered]
        if self.method == "bias" and self.teacher is not None:
            records += correct_biases(self.teacher, model, self.calib)
        return records
