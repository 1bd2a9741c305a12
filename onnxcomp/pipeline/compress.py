"""The compress job: load, run the pipeline (build.py), validate, save.

Options are ``options.CompressOptions``, so the CLI, recipes and ``auto`` build the same thing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxcomp.io import heap, model_io
from onnxcomp.io.safe_io import check_destination
from onnxcomp.methods.int4.quantize_int4 import INT4_MIN_OPSET
from onnxcomp.methods.weights.quantize_weights import PER_CHANNEL_MIN_OPSET
from onnxcomp.methods.weights.small_weights import synthetic_output_warning
from onnxcomp.options import CompressOptions
from onnxcomp.passes.report import CompressReport, PruneRecord, QuantRecord
from onnxcomp.pipeline.build import build_pipeline, run_pipeline

logger = logging.getLogger(__name__)

# An output may outgrow its input by renamed tensors and Q/DQ bookkeeping on a tiny model
# (said in the output); past this it is refused unless --allow-larger.
GROWTH_SLACK = 4096


@dataclass
class CompressResult:
    input_path: str
    output_path: str
    input_bytes: int
    output_bytes: int
    seconds: float
    pruned: list[PruneRecord] = field(default_factory=list)
    quantized: list[QuantRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    stripped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    activations: dict[str, Any] = field(default_factory=dict)
    recovered: list[Any] = field(default_factory=list)  # RecoverRecord per rebuilt layer
    quantized_to: str = "int8"  # what the quantized weights became ("codebook (4-bit)")

    @property
    def size_ratio(self) -> float:
        return self.output_bytes / self.input_bytes if self.input_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size_ratio"] = self.size_ratio
        d["pruned"] = [dict(asdict(p), sparsity=p.sparsity) for p in self.pruned]
        return d


def compress_model(
    model: ir.Model, options: CompressOptions, *, source: str | os.PathLike | None = None
) -> tuple[ir.Model, CompressResult]:
    """In-memory compression; the caller owns loading and saving. ``source``: the file
    ``model`` was loaded from, which int8's measure step then uses as the float model."""
    options.validate()
    report = CompressReport()
    if options.quantizes:
        target = INT4_MIN_OPSET if options.int4 else PER_CHANNEL_MIN_OPSET
        model, old = model_io.upgrade_opset(model, target)
        if old is not None:
            why = "int4 blocks" if target == INT4_MIN_OPSET else "per-channel quantization"
            report.notes.append(f"upgraded opset {old} -> {target} for {why}")
    model = run_pipeline(build_pipeline(options, report, source=source), model)
    result = CompressResult("", "", 0, 0, 0.0, **vars(report))
    return model, result


def compress(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike,
    options: CompressOptions | None = None,
    **kwargs: Any,
) -> CompressResult:
    """Compress a model file into another; options as a CompressOptions or keywords."""
    options = options or CompressOptions(**kwargs)
    options.validate()
    start = time.perf_counter()
    src, out = Path(model_path), Path(output_path)
    _check_paths(src, out)
    model_io.check_input(src)  # first: the checker's copy of the model is freed before load
    model = model_io.load(src)
    model, result = compress_model(model, options, source=src)
    heap.trim()  # what the passes freed goes back before the output is serialized
    in_bytes = model_io.file_size(src)
    limit = None if options.allow_larger else in_bytes + max(GROWTH_SLACK, in_bytes // 100)
    model_io.save(model, out, source=src, max_bytes=limit, release=True)
    result.input_path, result.output_path = str(src), str(out)
    result.input_bytes = in_bytes
    result.output_bytes = model_io.file_size(out)
    target = options.target_size
    if target is not None and result.output_bytes > target * in_bytes:
        result.notes.append(
            f"warning: the file is {result.output_bytes / in_bytes:.4f} of the input, above "
            f"--target-size {target:g} (the plan's estimate missed what the graph adds)"
        )
    if options.calib is None and (options.quantize == "codebook" or options.int4):
        what = "codebook" if options.quantize == "codebook" else "int4"
        warning = synthetic_output_warning(src, out, result.quantized, what)
        if warning and not any(n.startswith(f"warning: {what} without") for n in result.notes):
            result.notes.append(warning)
    result.seconds = time.perf_counter() - start
    return result


def _check_paths(src: Path, out: Path) -> None:
    """Fail before any work when the output cannot be written."""
    check_destination(out, src)
