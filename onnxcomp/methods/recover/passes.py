"""Recovery as onnx_ir passes in the compress pipeline, and the context they share.

``GPTQPass`` stands where QuantizeWeightsPass stood and ``SparseGPTPass`` where
MagnitudePrunePass stood: the layers they can rebuild get the data-aware treatment, every
other weight the plain one *first*, so the student the rebuilt layers see is the final
one. Records keep the plain passes' shapes, so reports need no special case.

``Recovery`` is built with the pipeline, which hands it the calibration data it opened:
``start_pass`` (right after prepare) snapshots the teacher, ``prune_pass`` and
``quantize_pass`` swap the recovering passes in, ``bias_pass`` (last) corrects biases
against the teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxcomp.graph import opaque_types
from onnxcomp.graph.weights import Weight
from onnxcomp.io.data import DataSource
from onnxcomp.methods.prune.magnitude import MagnitudePrunePass
from onnxcomp.methods.recover.bias_fold import correct_biases
from onnxcomp.methods.recover.driver import RecoverRecord, rebuild
from onnxcomp.methods.recover.guard import output_fidelity
from onnxcomp.methods.recover.layers import find_layers
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass
from onnxcomp.passes.report import PruneRecord, QuantRecord

if TYPE_CHECKING:
    from onnxcomp.options import CompressOptions
    from onnxcomp.passes.report import CompressReport

# The calibration data, or a function that gives it once the model is known.
Calib = DataSource | Callable[[], DataSource]


def _data(calib: Calib) -> DataSource:
    return calib() if callable(calib) else calib


def _everything(weight: Weight) -> bool:
    return True


class GPTQPass(ir.passes.InPlacePass):
    """int8 weights by GPTQ where the layer allows it, plain rounding elsewhere."""

    def __init__(
        self,
        calib: Calib,
        *,
        per_channel: bool = True,
        include: Callable[[Weight], bool] = _everything,
        bits: int = 8,
        threads: int = 0,
        report: CompressReport | None = None,
    ) -> None:
        super().__init__()
        self.calib, self.per_channel, self.include = calib, per_channel, include
        self.bits, self.threads, self.report = bits, threads, report
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
            _data(self.calib),
            "gptq",
            bits=self.bits,
            per_channel=self.per_channel,
            threads=self.threads,
        )
        self.records = plain.records + [r for r in rebuilt if isinstance(r, QuantRecord)]
        if self.report is not None:
            self.report.quantized += self.records
            self.report.skipped.update(self.skipped)
            self.report.recovered += self.recovered
        return ir.passes.PassResult(model, modified=bool(self.records))


class SparseGPTPass(ir.passes.InPlacePass):
    """Pruning by SparseGPT where the layer allows it, by magnitude elsewhere.

    Each rebuilt weight loses as many elements as magnitude pruning would have taken
    from it (the same threshold or sparsity), chosen and compensated on the data.
    """

    def __init__(
        self,
        calib: Calib,
        *,
        threshold: float | None = None,
        sparsity: float | None = None,
        include: Callable[[Weight], bool] = _everything,
        threads: int = 0,
        per_weight_sparsity: dict[str, float] | None = None,
        report: CompressReport | None = None,
    ) -> None:
        super().__init__()
        self.calib, self.threshold, self.sparsity = calib, threshold, sparsity
        self.include, self.threads, self.report = include, threads, report
        self.per_weight_sparsity = per_weight_sparsity if per_weight_sparsity is not None else {}
        self.records: list[PruneRecord] = []
        self.recovered: list[RecoverRecord] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        layers = find_layers(model, self.include)
        mine = {layer.weight.name for layer in layers}
        counts = {w.name: self._count(w.name, w.array) for w in (la.weight for la in layers)}
        layers = [la for la in layers if counts[la.weight.name]]  # none to cut: no Hessian
        plain = MagnitudePrunePass(
            threshold=self.threshold,
            sparsity=self.sparsity,
            include=lambda w: self.include(w) and w.name not in mine,
            per_weight_sparsity=self.per_weight_sparsity,
        )
        plain(model)
        self.recovered, rebuilt = rebuild(
            model, layers, _data(self.calib), "sparsegpt", counts=counts, threads=self.threads
        )
        self.records = plain.records + [r for r in rebuilt if isinstance(r, PruneRecord)]
        if self.report is not None:
            self.report.pruned += self.records
            self.report.recovered += self.recovered
        modified = any(r.zeros_after != r.zeros_before for r in self.records)
        return ir.passes.PassResult(model, modified=modified)

    def _count(self, name: str, array: np.ndarray) -> int:
        if self.threshold is not None:
            return int(np.count_nonzero(np.abs(array) <= self.threshold))
        return round(self.per_weight_sparsity.get(name, self.sparsity or 0.0) * array.size)


class Recovery:
    """What the recovery passes of one pipeline share: the methods (a closed-form repair,
    a trained rung, or the one then the other), the calibration data (opened once the
    model is prepared) and the teacher (a cheap clone sharing tensors, taken right after
    prepare: the model before any compression)."""

    def __init__(
        self,
        options: CompressOptions,
        data: Callable[[], DataSource],
        report: CompressReport | None = None,
    ) -> None:
        assert options.recover is not None
        self.methods: tuple[str, ...] = options.recover_methods
        self.options = options
        self.data = data  # the pipeline's calibration data, opened once
        self.report = report
        self.teacher: ir.Model | None = None

    def start_pass(self) -> ir.passes.InPlacePass:
        return StartRecoveryPass(self)

    def prune_pass(self, default: MagnitudePrunePass) -> ir.passes.InPlacePass:
        """SparseGPT in place of magnitude pruning (same options), or ``default``."""
        if "sparsegpt" not in self.methods:
            return default
        return SparseGPTPass(
            self.data,
            threshold=default.threshold,
            sparsity=default.sparsity,
            include=default.include,
            per_weight_sparsity=default.per_weight_sparsity,
            report=default.report,
        )

    def quantize_pass(self, default: QuantizeWeightsPass) -> ir.passes.InPlacePass:
        """GPTQ in place of plain weight rounding (same options), or ``default``. Block-wise
        reconstruction starts from GPTQ's codes (AdaRound then moves them where the
        layer's output, activations and all, gets closer)."""
        if not {"gptq", "blockwise"} & set(self.methods):
            return default
        return GPTQPass(
            self.data, per_channel=default.per_channel, include=default.include,
            report=default.report, bits=7 if default.reduced else 8,
        )  # fmt: skip

    def bias_pass(self) -> ir.passes.PassBase:
        return BiasCorrectionPass(self)


class StartRecoveryPass(ir.passes.InPlacePass):
    """Snapshot the teacher (the prepared model, before any compression) for bias."""

    def __init__(self, recovery: Recovery) -> None:
        super().__init__()
        self.recovery = recovery

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rec = self.recovery
        wanted = {"bias", "blockwise", "distill"} & set(rec.methods)
        rec.teacher = _clone(model) if wanted else None
        return ir.passes.PassResult(model, modified=False)


class BiasCorrectionPass(ir.passes.FunctionalPass):
    """Fold each compressed layer's mean output shift into its bias (last, after every
    other change), the teacher's outputs as the target; kept only when the corrected
    model's outputs are closer to the teacher's (methods/recover/guard.py)."""

    def __init__(self, recovery: Recovery) -> None:
        super().__init__()
        self.recovery = recovery

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rec = self.recovery
        candidate = _clone(model)
        if "bias" not in rec.methods or rec.teacher is None:
            return ir.passes.PassResult(candidate, modified=False)
        records = correct_biases(rec.teacher, candidate, rec.data())
        if not records:
            return ir.passes.PassResult(candidate, modified=False)
        (before, after), gauge = output_fidelity(
            rec.teacher, [model, candidate], rec.data(), rec.options
        )
        if after < before:
            if rec.report is not None:
                rec.report.notes.append(
                    f"bias correction not kept: it moved the outputs away from the original "
                    f"model's ({gauge} {1 - before:.5g} -> {1 - after:.5g} on the "
                    "calibration data)"
                )
            return ir.passes.PassResult(_clone(model), modified=False)
        if rec.report is not None:
            rec.report.recovered += records
            rec.report.notes.append(
                f"bias correction: {gauge} {1 - before:.5g} -> {1 - after:.5g} "
                "on the calibration data"
            )
        return ir.passes.PassResult(candidate, modified=True)


def _clone(model: ir.Model) -> ir.Model:
    """A copy that keeps the types onnx_ir cannot hold (``clone`` drops ``meta``)."""
    copy = model.clone()
    opaque_types.carry(model, copy)
    return copy
