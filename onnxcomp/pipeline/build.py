"""The compress pipeline: one onnx_ir PassManager, built from the options.

    prepare (with layer keys: each must name something before or after it)
      -> drop exporter debug info -> note the inputs --calib is read for
      -> (recovery: snapshot teacher)
      -> plan per-layer settings
      -> prune + strip -> (int8: shape inference, float reference)
      -> quantize weights -> gather before dequantize -> activations (int8)
         (--quantize codebook: codebook weights, packed with --pack, in their place;
          --quantize int4: 4-bit MatMul/Gemm blocks and embedding rows first, int8 the rest)
      -> bias correction (recovery) -> cleanup (store what no kernel reads int8)
      -> distill or blockwise (recovery: trains the stored codes, plain or repaired by
         --recover gptq|sparsegpt|bias first) -> pack (--pack)

Every step is an onnx_ir pass; what they did goes into the ``CompressReport`` handed to
them. Steps that depend on the model (which weights a layer setting names, whether
anything is pruned at all) learn it from ``Context`` at run time, filled by the passes
before them. Recovery swaps its data-aware passes in for the plain ones (``recover/``).

The calibration data is opened here and nowhere else: ``Context.data`` opens ``--calib``
once, at the first step that reads it, for the prepared model's inputs, and every method
that needs data (channels, smoothquant, int8, int4, codebook, recovery) gets that one
``DataSource``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.graph import opaque_types
from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.io.data import DataSource, InputSpec, input_specs, open_data
from onnxcomp.io.model_io import tensor_bytes
from onnxcomp.methods.prune.magnitude import MagnitudePrunePass
from onnxcomp.methods.prune.small import dense_note, dense_small
from onnxcomp.methods.weights.batchnorm_vectors import BatchNormTwoVectorsPass
from onnxcomp.methods.weights.decode_at_load import DecodeAtLoadPass, StoreConstantsInt8Pass
from onnxcomp.methods.weights.float16_vectors import StoreVectorsFloat16Pass
from onnxcomp.methods.weights.gather_dequantize import GatherBeforeDequantizePass
from onnxcomp.methods.weights.gemm_nbits_layout import GemmWeightLayoutPass
from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass
from onnxcomp.methods.weights.saturation import bits_for
from onnxcomp.methods.weights.small_weights import saving_is_small, small_note, uncalibrated_warning
from onnxcomp.options import CompressOptions
from onnxcomp.passes.prepare import prepare_pass
from onnxcomp.passes.report import CompressReport
from onnxcomp.passes.strip import RemoveUnusedSubgraphInitializersPass, strip_pass
from onnxcomp.passes.strip_debug_info import StripDebugInfoPass
from onnxcomp.passes.value_info import DropInferredValueInfoPass, RecordValueInfoPass
from onnxcomp.pipeline.codebook_step import CodebookStepPass
from onnxcomp.pipeline.layers import (
    check_layer_names,
    excluder,
    int4_filter,
    model_names,
    nodes_kept_out_of_int8,
    quantize_filter,
    resolve,
    sparsity_overrides,
)


@dataclass
class Context:
    """What the passes of one run learn about the model and pass on."""

    options: CompressOptions
    report: CompressReport
    source: str | os.PathLike | None = None  # the file the model was loaded from
    overrides: dict[str, float] = field(default_factory=dict)  # per-weight sparsity
    int8_options: CompressOptions | None = None  # options + nodes kept out of int8
    reference: bytes | str | None = None  # the float model int8 is measured against
    names: set[str] = field(default_factory=set)  # what a layer key may name (LayerNamesPass)
    specs: list[InputSpec] | None = None  # the prepared model's inputs (InputSpecsPass)
    calib: DataSource | None = None  # --calib, once opened (data())

    @property
    def prunes(self) -> bool:
        return self.options.prunes or bool(self.overrides)

    def data(self) -> DataSource:
        """The calibration data, opened on first use and shared by every step after."""
        if self.calib is None:
            assert self.specs is not None, "InputSpecsPass has not run"
            if self.options.calib is None:
                raise OnnxcompError("this step needs calibration data: give --calib")
            self.calib = open_data(self.options.calib, self.specs)
        return self.calib


def build_pipeline(
    options: CompressOptions,
    report: CompressReport,
    *,
    source: str | os.PathLike | None = None,
) -> ir.passes.PassManager:
    """The passes ``options`` ask for, in order; run it on a (prepared-opset) model."""
    ctx = Context(options, report, source)
    include = excluder(options.exclude)
    recovery = None
    if options.recover is not None:
        from onnxcomp.methods.recover import Recovery

        recovery = Recovery(options, ctx.data, report)

    shapes = RecordValueInfoPass()
    passes: list[ir.passes.PassBase] = [shapes, prepare_pass()]
    if options.layers:  # names from before prepare (it folds and renames) and after
        passes = [shapes, LayerNamesPass(ctx), prepare_pass(), LayerNamesPass(ctx, check=True)]
    if not options.keep_debug_info:
        passes.append(StripDebugInfoPass(report))
    passes.append(InputSpecsPass(ctx))
    if recovery is not None:
        passes.append(recovery.start_pass())
    passes.append(PlanLayersPass(ctx))
    if options.channel_pruning:
        from onnxcomp.methods.channels.prune import channel_pass

        passes.append(channel_pass(options, report, ctx.data))

    prune: ir.passes.InPlacePass = MagnitudePrunePass(
        threshold=options.prune_threshold,
        sparsity=options.prune_sparsity,
        global_=options.global_prune,
        include=include,
        per_weight_sparsity=ctx.overrides,  # filled by PlanLayersPass
        report=report,
    )
    if recovery is not None:
        prune = recovery.prune_pass(prune)  # type: ignore[arg-type]
    passes.append(When(lambda: ctx.prunes, prune, strip_pass(report)))

    if options.quantize == "int8":
        if options.smoothquant:
            from onnxcomp.methods.int8.smoothquant import SmoothQuantPass

            wanted = quantize_filter(include, options.layers, options.quantize)
            bits = bits_for(["MatMul", "Gemm"], _reduced_ops(options))
            passes.append(SmoothQuantPass(ctx.data, wanted, report, bits, options.calib_method))
        passes.append(Int8ReferencePass(ctx))
    # codebook codes are packed after training (distill/repack.py)
    deferred = options.quantize == "codebook" and options.trained is not None
    if options.quantize == "codebook":
        passes.append(
            CodebookStepPass(
                replace(options, pack=False) if deferred else options,
                quantize_filter(include, options.layers, options.quantize),
                report,
                calib=ctx.data if options.calib is not None else None,
                source=ctx.source,
            )
        )
    elif options.quantizes:
        wanted = quantize_filter(include, options.layers, options.quantize)
        if options.int4:
            int4 = int4_filter(include, options.layers, options.quantize)
            passes.append(Int4WeightsPass(options, int4, report, ctx))
        quantize: ir.passes.InPlacePass = QuantizeWeightsPass(
            per_channel=not options.per_tensor,
            include=wanted,
            report=report,
            reduced=_reduced_ops(options),
        )
        if recovery is not None:
            quantize = recovery.quantize_pass(quantize)  # type: ignore[arg-type]
        passes += [quantize, GatherBeforeDequantizePass()]
    if options.quantize == "int8":
        passes.append(QuantizeActivationsPass(ctx))
    if recovery is not None and options.repair == "bias":
        passes.append(recovery.bias_pass())
    if options.quantizes:
        passes.append(StoreInt8AtLoadPass(options, include, report))
    if recovery is not None and options.trained is not None:
        # Before packing: the student trains the plain codes, packing stores the final ones.
        # After a closed-form repair it starts from the repaired values, judged against them.
        from onnxcomp.methods.distill import DistillPass
        from onnxcomp.methods.distill.blockwise import BlockwisePass

        teacher = recovery
        trained = DistillPass if options.trained == "distill" else BlockwisePass
        passes.append(
            trained(
                options, ctx.data, lambda: teacher.teacher, report,
                reduced=bool(_reduced_ops(options)), start=options.repair,
            )
        )  # fmt: skip
    if deferred and options.pack:
        from onnxcomp.methods.distill.repack import PackCodebookCodesPass

        passes.append(PackCodebookCodesPass(report))
    if options.pack and options.quantize in ("weights", "int8"):
        passes.append(PackInt8StepPass(report))
    passes.append(DropInferredValueInfoPass(shapes))
    return ir.passes.PassManager(passes, steps=1)


def _reduced_ops(options: CompressOptions) -> frozenset[str]:
    """Op types whose int8 kernels would overflow on full-range weights (--weight-range)."""
    if options.quantize != "int8":
        return frozenset()  # weights decoded to float: no integer kernel reads them
    from onnxcomp.methods.int8.flow import int8_reduced_ops

    return int8_reduced_ops(options)[0]


def run_pipeline(passes: ir.passes.PassManager, model: ir.Model) -> ir.Model:
    """Run ``passes`` on ``model``. A user error (or an OSError such as a full disk) raised
    inside a pass comes out as itself: onnx_ir wraps it in PassError, which reads as a bug."""
    try:
        return passes(model).model
    except ir.passes.PassError as exc:
        cause: BaseException = exc
        while isinstance(cause, ir.passes.PassError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if _inconsistent_input(cause):
            cause = OnnxcompError(
                f"onnxruntime rejects the model's own shapes or types: {one_line(cause)}"
            )
        elif not isinstance(cause, (OnnxcompError, OSError)):
            raise
    raise cause  # outside the except block: no PassError context around it


def _inconsistent_input(exc: BaseException) -> bool:
    """onnxruntime's shape or type inference refused a graph the passes only annotated
    (a Gemm whose declared widths disagree): the input is malformed, not onnxcomp."""
    text = str(exc)
    return type(exc).__module__.startswith("onnxruntime") and (
        "ShapeInferenceError" in text or "TypeInferenceError" in text
    )


class When(ir.passes.InPlacePass):
    """Run ``passes`` only when ``condition()`` holds at run time."""

    def __init__(self, condition: Callable[[], bool], *passes: ir.passes.PassBase) -> None:
        super().__init__()
        self.condition = condition
        self.passes = ir.passes.Sequential(*passes)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not self.condition():
            return ir.passes.PassResult(model, modified=False)
        return self.passes(model)


class InputSpecsPass(ir.passes.InPlacePass):
    """Note the prepared model's inputs: what ``Context.data`` opens ``--calib`` for."""

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.ctx.specs = input_specs(model)
        return ir.passes.PassResult(model, modified=False)


class LayerNamesPass(ir.passes.InPlacePass):
    """Collect the names a layer key may match; with ``check``, refuse a key that matches
    none (a typo or the wrong model), before any work."""

    def __init__(self, ctx: Context, *, check: bool = False) -> None:
        super().__init__()
        self.ctx, self.check = ctx, check

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.ctx.names |= model_names(model)
        if self.check:
            check_layer_names(self.ctx.options.layers, self.ctx.names)
        return ir.passes.PassResult(model, modified=False)


class PlanLayersPass(ir.passes.InPlacePass):
    """Per-layer settings on the prepared model: sparsity per weight, and the nodes whose
    layer stays float (or int8 weights only), which keep float activations."""

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        options = self.ctx.options
        weights = find_weights(model)
        self.ctx.overrides.update(sparsity_overrides(weights, options.layers))
        if options.prune_sparsity and not options.global_prune:
            include = excluder(options.exclude)
            total = tensor_bytes(model)
            small = dense_small(weights, options.prune_sparsity, total, include, self.ctx.overrides)
            self.ctx.overrides.update(dict.fromkeys(small, 0.0))
            if note := dense_note(small):
                self.ctx.report.notes.append(note)
        kept = sorted(nodes_kept_out_of_int8(model, options.layers))
        self.ctx.int8_options = replace(options, exclude=(*options.exclude, *kept))
        return ir.passes.PassResult(model, modified=False)


class Int8ReferencePass(ir.passes.InPlacePass):
    """Infer tensor types for placement, and keep the float model the measure step
    times int8 against."""

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxcomp.methods.int8.flow import prepare_int8

        prepare_int8(model)
        ctx = self.ctx
        pinned = bool(ctx.options.int8_families)
        if ctx.options.measure_mode != "off" and not pinned:  # float, to measure int8 against
            # Unpruned, the input file is that model (onnxruntime folds BatchNorm and
            # constants itself): no 2x-model serialization held through calibration.
            pruned = ctx.prunes or ctx.options.channel_pruning
            unchanged = ctx.source is not None and not pruned
            ctx.reference = (
                str(ctx.source) if unchanged else opaque_types.to_proto(model).SerializeToString()
            )
        return ir.passes.PassResult(model, modified=True)


class QuantizeActivationsPass(ir.passes.FunctionalPass):
    """Activations: calibrate, place Q/DQ, measure against the float model (methods/int8/flow.py).

    Functional: the measure step may pick a candidate rebuilt from a serialized copy."""

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxcomp.methods.int8.flow import quantize_int8

        options = self.ctx.int8_options or self.ctx.options
        result = self.ctx.report
        source = self.ctx.source
        new, report = quantize_int8(
            model,
            options,
            self.ctx.reference,
            self.ctx.data(),
            progress=options.progress,
            tune=options.measure_mode,
            base_dir=str(Path(source).parent) if source is not None else None,
        )
        result.activations = report.as_dict()
        dropped = report.families_dropped
        switched = {
            "dynamic": "MatMul/Gemm inputs quantized at run time (no calibrated range)",
            "skip_layernorm": "residual Add + LayerNorm left to onnxruntime's fusion",
        }
        for fam, why in dropped.items():
            what = switched.get(fam, f"kept {fam} ops float")
            result.notes.append(f"{what}: {why}")
        seven = sum(1 for r in result.quantized if r.bits == 7)
        if seven:
            result.notes.append(
                f"{seven} int8 weights of {'/'.join(report.reduced_ops)} layers are 7-bit: "
                f"{report.weight_range_reason}"
            )
        if report.decoded_at_load:
            result.notes.append(
                f"{report.decoded_at_load} weights of ops kept float stay int8 in the file, "
                "decoded once by onnxruntime at load (float speed)"
            )
        if report.latency_ratio is not None and report.fidelity is not None:
            result.notes.append(
                f"int8 runs at {report.latency_ratio:.2f}x the float latency (onnxruntime, "
                f"1 thread), {report.fidelity_metric} {1 - report.fidelity:.4g} on calibration "
                "data"
            )
        if report.busy:
            result.notes.append(report.busy)
        if report.decided_by:
            result.notes.append(
                f"int8 op families {' '.join(report.families) or 'none'}: decided by "
                f"{report.decided_by} (a recipe's int8-families pins them)"
            )
        # A functional pass returns a new model; a clone shares the tensors (not the meta).
        out = new.clone() if new is model else new
        opaque_types.carry(model, out)
        return ir.passes.PassResult(out, modified=True)


class _WeightsStepPass(ir.passes.InPlacePass):
    """A step over the weights ``include`` accepts, reporting into ``report``."""

    def __init__(
        self,
        options: CompressOptions,
        include: Callable[[Weight], bool],
        report: CompressReport,
        ctx: Context | None = None,
    ) -> None:
        super().__init__()
        self.options, self.include, self.report, self.ctx = options, include, report, ctx


class Int4WeightsPass(_WeightsStepPass):
    """--quantize int4: MatMul/Gemm weights as 4-bit blocks (GPTQ from --calib), embedding
    tables as 4-bit rows (methods/int4/flow.py). What int4 cannot serve stays float for the
    int8 weights step after it; each such weight is said with its reason."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxcomp.methods.int4.flow import quantize_int4

        options, result = self.options, self.report
        total, small = tensor_bytes(model), []

        def include(w: Weight) -> bool:
            if not self.include(w):
                return False
            layer = resolve(w, options.layers)
            if (layer is None or layer.precision != "int4") and saving_is_small(w, 4, total):
                small.append(w.name)
                return False
            return True

        records, skipped, notes = quantize_int4(
            model,
            block_size=options.block_size,
            symmetric=options.symmetric,
            include=include,
            calib=self.ctx.data if self.ctx and options.calib is not None else None,
            awq=options.awq,
            options=options,
        )
        result.quantized += records
        result.skipped.update({f"{k} (int4)": v for k, v in skipped.items()})
        result.notes += notes
        for note in (
            small_note(sorted(set(small)), 4),
            None if options.calib is not None else uncalibrated_warning(records, "int4"),
        ):
            if note:
                result.notes.append(note)
        int4 = sum(r.bits == 4 for r in records)
        if int4:
            result.quantized_to = f"int4 ({int4}) and int8"
        return ir.passes.PassResult(model, modified=bool(records))


class StoreInt8AtLoadPass(_WeightsStepPass):
    """What no int8 kernel will read is still stored int8, decoded by onnxruntime at load:
    weights of ops that stay float, and big float constants that are no op's weight slot
    (LSTM weights, tensors read by Slice/Add/Unsqueeze)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        options, result = self.options, self.report
        weight_only = options.quantize in ("weights", "int4")
        keep = ("MatMul", "Gemm") if weight_only else ()
        # [K, N] int8 Gemm weights: MatMulNBits fuses them
        laid_out = weight_only and GemmWeightLayoutPass()(model).modified
        decode = DecodeAtLoadPass(keep_ops=keep)
        decode(model)
        store = StoreConstantsInt8Pass(
            quantize_filter(self.include, options.layers, options.quantize)
        )
        store(model)
        if store.records or decode.converted:
            RemoveUnusedNodesPass()(model)
            RemoveUnusedSubgraphInitializersPass()(model)
            result.quantized += store.records
            if store.records:
                result.notes.append(
                    f"stored {len(store.records)} other float constants int8 "
                    "(decoded once by onnxruntime at load)"
                )
        result.skipped.update({k: v for k, v in store.skipped.items() if v != "excluded"})
        half = StoreVectorsFloat16Pass(
            quantize_filter(self.include, options.layers, options.quantize)
        )
        if half(model).modified:
            result.notes.append(
                f"stored {len(half.converted)} float vectors (scales, biases) float16: "
                f"{half.bytes_saved:,} bytes saved, relative error <= 2**-11"
            )
        two_vectors = False
        if weight_only:
            bn = BatchNormTwoVectorsPass()
            two_vectors = bn(model).modified
            if two_vectors:
                RemoveUnusedSubgraphInitializersPass()(model)
                result.notes.append(
                    f"{len(bn.rewritten)} BatchNorms stored as two vectors (same op): "
                    f"{bn.bytes_saved:,} bytes saved"
                )
        if decode.converted and weight_only:
            result.notes.append(
                f"{len(decode.converted)} weights of ops without an int8 kernel are decoded once "
                "at load: they run at float speed"
            )
        modified = bool(store.records or decode.converted) or laid_out or two_vectors
        return ir.passes.PassResult(model, modified=modified)


class PackInt8StepPass(ir.passes.InPlacePass):
    """``--pack`` with int8 weights: PackInt8Pass, reported."""

    def __init__(self, report: CompressReport) -> None:
        super().__init__()
        self.report = report

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxcomp.methods.weights.pack_int8 import PackInt8Pass

        step = PackInt8Pass()
        result = step(model)
        if step.packed:
            forms = sorted({f.split(" (")[0] for _, f in step.packed})
            self.report.notes.append(
                f"packed {len(step.packed)} int8 weights ({', '.join(forms)}): "
                f"{step.saved:,} bytes saved; decoded by onnxruntime at load"
            )
        return result
