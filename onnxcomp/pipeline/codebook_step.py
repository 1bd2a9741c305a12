"""The pipeline's codebook step (``--quantize codebook``): run CodebookQuantizePass on the
calibration data once the model is known, and report it into the CompressReport."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxcomp.graph.weights import Weight
from onnxcomp.io.model_io import file_size, tensor_bytes
from onnxcomp.methods.codebook.quantize_codebook import CodebookQuantizePass, model_bytes
from onnxcomp.methods.weights.small_weights import saving_is_small, small_note, uncalibrated_warning
from onnxcomp.pipeline.layers import layer_bits

if TYPE_CHECKING:
    from onnxcomp.io.data import DataSource
    from onnxcomp.options import CompressOptions
    from onnxcomp.passes.report import CompressReport


class CodebookStepPass(ir.passes.InPlacePass):
    """Codebook-quantize every included weight; with calibration data (``--calib``, opened
    by the pipeline), importance-weighted codebooks and GPTQ codes."""

    def __init__(
        self,
        options: CompressOptions,
        include: Callable[[Weight], bool],
        report: CompressReport,
        calib: Callable[[], DataSource] | None = None,
        source: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.options, self.include, self.report, self.calib = options, include, report, calib
        self.source = source  # the input file: what --target-size is a share of

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        options, result = self.options, self.report
        calib = self.calib() if self.calib is not None else None
        total = tensor_bytes(model)
        small: list[str] = []

        def bits_of(w: Weight) -> int | None:
            own = layer_bits(w, options.layers)
            if own is None and options.bits < 8 and saving_is_small(w, options.bits, total):
                small.append(w.name)
                return 8
            return own

        source_bytes = target = None
        if options.target_size is not None:
            source_bytes = file_size(self.source) if self.source else model_bytes(model)
            target = int(options.target_size * source_bytes)
        step = CodebookQuantizePass(
            options.bits,
            include=self.include,
            calib=calib,
            pack=options.pack,
            bits_of=bits_of,
            target_bytes=target,
            task=options,
        )
        step(model)
        if step.plan is not None and source_bytes:
            assert options.target_size is not None
            result.notes.append(step.plan.note(options.target_size, options.bits, source_bytes))
        for note in (
            small_note(sorted(set(small)), options.bits),
            None if calib is not None else uncalibrated_warning(step.records, "codebook"),
        ):
            if note:
                result.notes.append(
                    note
                )  # inferred shapes are dropped for every mode at the end (value_info.py)
        result.quantized += step.records
        result.recovered += step.recovered
        result.quantized_to = f"codebook ({options.bits}-bit)"
        forms: dict[str, int] = {}
        for r in step.records:
            kind = r.storage.split(", ")[-1].split(" (")[0]
            forms[kind] = forms.get(kind, 0) + 1
        if step.records:
            summary = ", ".join(f"{n} {k}" for k, n in sorted(forms.items()))
            result.notes.append(
                f"codebook weights are decoded once by onnxruntime at load ({summary}): the "
                "model runs at fp32 speed and fp32 memory; this mode shrinks downloads and disk"
            )
        return ir.passes.PassResult(model, modified=bool(step.records))
