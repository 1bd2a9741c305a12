"""The compress job: load, prepare, prune, strip, quantize, validate, save.

Options are a plain dataclass so the CLI, recipes and ``auto`` build the same thing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxcomp import model as model_io
from onnxcomp.errors import OnnxcompError
from onnxcomp.layers import (
    LayerOptions,
    any_quantized,
    check_layer_names,
    model_names,
    nodes_kept_out_of_int8,
    quantize_filter,
    sparsity_overrides,
    validate_layers,
)
from onnxcomp.passes.decode_at_load import DecodeAtLoadPass, StoreConstantsInt8Pass
from onnxcomp.passes.gather_dequantize import GatherBeforeDequantizePass
from onnxcomp.passes.prepare import prepare_pass
from onnxcomp.passes.prune import MagnitudePrunePass, PruneRecord, validate_options
from onnxcomp.passes.quantize_weights import (
    PER_CHANNEL_MIN_OPSET,
    QuantizeWeightsPass,
    QuantRecord,
)
from onnxcomp.passes.strip import (
    BypassZeroAddPass,
    DropZeroBiasPass,
    RemoveUnusedSubgraphInitializersPass,
    strip_pass,
)
from onnxcomp.weights import Weight, find_weights

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("weights", "int8")
# An output may outgrow its input by renamed tensors and Q/DQ bookkeeping on a tiny model
# (said in the output); past this it is refused unless --allow-larger.
GROWTH_SLACK = 4096
CALIB_METHODS = ("minmax", "percentile", "entropy", "mse")


@dataclass
class CompressOptions:
    prune_threshold: float | None = None
    prune_sparsity: float | None = None
    global_prune: bool = False
    quantize: str | None = None
    per_tensor: bool = False
    exclude: tuple[str, ...] = ()
    calib: Any = None
    calib_method: str = "minmax"
    percentile: float = 99.99
    activation_type: str = "auto"
    progress: bool = True  # calibration progress bar on stderr (when it is a TTY)
    measure: bool = True  # int8: time against float, keep float the op families that do not pay
    recover: str | None = None  # bias | gptq | sparsegpt: teacher-guided repair (recover/)
    allow_larger: bool = False  # write the output even when it is larger than the input
    layers: dict[str, LayerOptions] = field(default_factory=dict)  # per layer, see layers.py

    def validate(self) -> None:
        validate_options(self.prune_threshold, self.prune_sparsity)
        if self.global_prune and self.prune_sparsity is None:
            raise OnnxcompError("--global ranks weights for --prune-sparsity; give a sparsity")
        if self.quantize is not None and self.quantize not in QUANTIZE_MODES:
            raise OnnxcompError(
                f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {self.quantize!r}"
            )
        if self.calib_method not in CALIB_METHODS:
            raise OnnxcompError(
                f"--calib-method must be one of {', '.join(CALIB_METHODS)}, "
                f"got {self.calib_method!r}"
            )
        if self.quantize == "int8" and self.calib is None:
            raise OnnxcompError("--quantize int8 needs calibration data: give --calib DATA")
        if self.calib is not None and self.quantize != "int8" and self.recover is None:
            raise OnnxcompError("--calib is only used with --quantize int8")
        if self.per_tensor and self.quantize is None:
            raise OnnxcompError("--per-tensor needs --quantize")
        if self.activation_type not in ("auto", "uint8", "int8"):
            raise OnnxcompError(
                f"--activation-type must be auto, uint8 or int8, got {self.activation_type!r}"
            )
        if not 0 < self.percentile <= 100:
            raise OnnxcompError(f"--percentile must be in (0, 100], got {self.percentile}")
        validate_layers(self.layers, self.quantize)
        nothing = self.prune_threshold is None and self.prune_sparsity is None
        if nothing and self.quantize is None and not self.layers:
            raise OnnxcompError(
                "nothing to do: give --prune-threshold, --prune-sparsity or --quantize"
            )
        if self.recover is not None:
            from onnxcomp.recover import validate_recover

            validate_recover(self)


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

    @property
    def size_ratio(self) -> float:
        return self.output_bytes / self.input_bytes if self.input_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size_ratio"] = self.size_ratio
        d["pruned"] = [dict(asdict(p), sparsity=p.sparsity) for p in self.pruned]
        return d


def excluder(patterns: Iterable[str]):
    """A weight is excluded when a pattern names it, a consumer node, or a consumer op type."""
    wanted = set(patterns)

    def include(weight: Weight) -> bool:
        if weight.name in wanted:
            return False
        for use in weight.uses:
            if use.node.name in wanted or use.node.op_type in wanted:
                return False
        return True

    return include


def compress_model(
    model: ir.Model, options: CompressOptions, *, source: str | os.PathLike | None = None
) -> tuple[ir.Model, CompressResult]:
    """In-memory compression; the caller owns loading and saving. ``source``: the file
    ``model`` was loaded from, which int8's measure step then uses as the float model."""
    options.validate()
    result = CompressResult("", "", 0, 0, 0.0)
    include = excluder(options.exclude)
    if options.quantize is not None or any_quantized(options.layers):
        target = PER_CHANNEL_MIN_OPSET
        model, old = model_io.upgrade_opset(model, target)
        if old is not None:
            result.notes.append(f"upgraded opset {old} -> {target} for per-channel quantization")
    known = model_names(model) if options.layers else set()
    prepare_pass()(model)
    if options.layers:
        check_layer_names(options.layers, known | model_names(model))
    # Teacher-guided recovery (onnxcomp/recover, --recover): snapshots the teacher here,
    # swaps GPTQ/SparseGPT in for the plain passes below, corrects biases at the end.
    recovery = None
    if options.recover is not None:
        from onnxcomp.recover import Recovery

        recovery = Recovery(model, options)
    overrides = sparsity_overrides(find_weights(model), options.layers)
    # Nodes whose layer stays float (or int8 weights only) keep float activations.
    int8_options = replace(
        options, exclude=(*options.exclude, *sorted(nodes_kept_out_of_int8(model, options.layers)))
    )
    pruned = options.prune_threshold is not None or options.prune_sparsity is not None
    if pruned or overrides:
        _prune(model, options, include, result, recovery, overrides)
    reference = None
    if options.quantize == "int8":
        from onnxcomp.int8 import prepare_int8

        prepare_int8(model)
        if options.measure:  # the float model, to measure int8 against
            # Unpruned, the input file is that model (onnxruntime folds BatchNorm and
            # constants itself): no 2x-model serialization held through calibration.
            unchanged = source is not None and not (pruned or overrides)
            reference = str(source) if unchanged else ir.to_proto(model).SerializeToString()
    if options.quantize is not None or any_quantized(options.layers):
        wanted = quantize_filter(include, options.layers, options.quantize)
        quant = QuantizeWeightsPass(per_channel=not options.per_tensor, include=wanted)
        if recovery is not None:
            quant = recovery.quantize_pass(quant)
        quant(model)
        GatherBeforeDequantizePass()(model)
        result.quantized = quant.records
        result.skipped.update(quant.skipped)
    if options.quantize == "int8":
        base_dir = str(Path(source).parent) if source is not None else None
        model = _int8(model, int8_options, reference, result, base_dir)
    if recovery is not None:
        result.recovered = recovery.finish(model)
    if options.quantize is not None or any_quantized(options.layers):
        _store_small(model, options, include, result)
    return model, result


def _int8(
    model: ir.Model, options: CompressOptions, reference, result, base_dir: str | None
) -> ir.Model:
    """Activations: calibrate, place Q/DQ, measure against the float model."""
    from onnxcomp.int8 import quantize_int8

    model, report = quantize_int8(
        model,
        options,
        reference,
        progress=options.progress,
        tune=options.measure,
        base_dir=base_dir,
    )
    result.activations = report.as_dict()
    dropped = report.families_dropped
    for fam, why in dropped.items():
        result.notes.append(f"kept {fam} ops float: {why}")
    if report.decoded_at_load:
        result.notes.append(
            f"{report.decoded_at_load} weights of ops kept float stay int8 in the file, "
            "decoded once by onnxruntime at load (float speed)"
        )
    if report.latency_ratio is not None:
        result.notes.append(
            f"int8 runs at {report.latency_ratio:.2f}x the float latency (onnxruntime, 1 thread), "
            f"output cosine {report.cosine:.5f} on calibration data"
        )
    return model


def _store_small(
    model: ir.Model, options: CompressOptions, include, result: CompressResult
) -> None:
    """What no int8 kernel will read is still stored int8, decoded by onnxruntime at load:
    weights of ops that stay float, and big float constants that are no op's weight slot
    (LSTM weights, tensors read by Slice/Add/Unsqueeze)."""
    keep = ("MatMul", "Gemm") if options.quantize == "weights" else ()
    decode = DecodeAtLoadPass(keep_ops=keep)
    decode(model)
    store = StoreConstantsInt8Pass(quantize_filter(include, options.layers, options.quantize))
    store(model)
    if store.records or decode.converted:
        RemoveUnusedNodesPass()(model)
        RemoveUnusedSubgraphInitializersPass()(model)
        result.quantized += store.records
        result.notes.append(
            f"stored {len(store.records)} other float constants int8 "
            "(decoded once by onnxruntime at load)"
        )
    result.skipped.update({k: v for k, v in store.skipped.items() if v != "excluded"})
    if decode.converted and options.quantize == "weights":
        result.notes.append(
            f"{len(decode.converted)} weights of ops without an int8 kernel are decoded once "
            "at load: they run at float speed"
        )


def _prune(
    model: ir.Model,
    options: CompressOptions,
    include,
    result: CompressResult,
    recovery=None,
    overrides: dict[str, float] | None = None,
) -> None:
    prune = MagnitudePrunePass(
        threshold=options.prune_threshold,
        sparsity=options.prune_sparsity,
        global_=options.global_prune,
        include=include,
        per_weight_sparsity=overrides,
    )
    if recovery is not None:
        prune = recovery.prune_pass(prune)
    prune(model)
    result.pruned = prune.records
    passes = strip_pass()
    passes(model)
    for p in passes.passes:
        if isinstance(p, BypassZeroAddPass):
            result.stripped += [f"bypassed zero add {n}" for n in p.bypassed]
        elif isinstance(p, DropZeroBiasPass):
            result.stripped += [f"dropped zero bias {n}" for n in p.dropped]


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
    in_bytes = model_io.file_size(src)
    limit = None if options.allow_larger else in_bytes + max(GROWTH_SLACK, in_bytes // 100)
    model_io.save(model, out, source=src, max_bytes=limit)
    result.input_path, result.output_path = str(src), str(out)
    result.input_bytes = in_bytes
    result.output_bytes = model_io.file_size(out)
    result.seconds = time.perf_counter() - start
    return result


def _check_paths(src: Path, out: Path) -> None:
    """Fail before any work when the output cannot be written."""
    from onnxcomp.safe_io import check_destination

    check_destination(out, src)
