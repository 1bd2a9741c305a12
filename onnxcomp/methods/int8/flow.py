"""Full int8: calibrate once, place Q/DQ, then measure and keep float what does not pay.

The flow (``quantize_int8``): plan where Q/DQ go on the weight-quantized model, collect
statistics of exactly those tensors in one streamed onnxruntime pass, insert the pairs,
then hand the result to the measure step (methods/int8/measure_step.py), which times it
against the float model and keeps float the op families that do not pay.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import (
    RemoveUnusedNodesPass,
    TopologicalSortPass,
)

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph import opaque_types
from onnxcomp.io.data import DataSource, input_specs
from onnxcomp.methods.int8 import measure_cache, measure_step
from onnxcomp.methods.int8.calibrate import Statistics, collect
from onnxcomp.methods.int8.dynamic_matmul import DynamicMatMulPass, dynamic_candidates
from onnxcomp.methods.int8.layernorm_guard import KeepLayerNormUnfusedPass, fusable_adds
from onnxcomp.methods.int8.measure_step import SWITCHES, Bench
from onnxcomp.methods.int8.placement import DEFAULT_FAMILIES, plan_qdq
from onnxcomp.methods.int8.quantize_activations import InsertQDQPass
from onnxcomp.methods.int8.report import Int8Report
from onnxcomp.methods.weights.decode_at_load import DecodeAtLoadPass
from onnxcomp.methods.weights.saturation import resolve_weight_bits
from onnxcomp.numerics.scales import activation_params
from onnxcomp.options import ACTIVATION_TYPES, CompressOptions
from onnxcomp.passes.shape_inference import InferShapesPass

logger = logging.getLogger(__name__)

CALIB_BATCH = 4  # samples per calibration run: peak memory vs onnxruntime call overhead


def resolve_activation_type(requested: str) -> tuple[str, str]:
    """uint8 on x86: onnxruntime's x86 kernels are u8 x s8 and its QDQ fusion refuses
    int8 activations for Conv/MatMul there (QDQIsInt8Allowed is ARM-only), so int8
    would leave every Conv unfused; ARM runs s8 x s8 natively."""
    if requested not in ACTIVATION_TYPES:
        raise OnnxcompError(f"--activation-type must be one of {', '.join(ACTIVATION_TYPES)}")
    if requested != "auto":
        return requested, "requested"
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        return "int8", f"{machine}: onnxruntime fuses s8s8 kernels"
    return "uint8", f"{machine}: onnxruntime fuses int8 Conv/MatMul only with uint8 activations"


def int8_reduced_ops(options: CompressOptions) -> tuple[frozenset[str], str]:
    """Op types whose int8 weights get 7 bits under ``options`` (methods/weights/saturation.py)."""
    dtype, _ = resolve_activation_type(getattr(options, "activation_type", "auto"))
    return resolve_weight_bits(getattr(options, "weight_range", "auto"), dtype)


def prepare_int8(model: ir.Model) -> None:
    """Infer tensor types: placement only quantizes what it knows is float32 (BatchNorm
    was folded by the prepare pass already)."""
    InferShapesPass()(model)


def quantize_int8(
    model: ir.Model,
    options: CompressOptions,
    reference: bytes | str | None,
    calib: DataSource,
    *,
    progress: bool = True,
    tune: bool | str = True,
    base_dir: str | None = None,
) -> tuple[ir.Model, Int8Report]:
    """Quantize activations of a weight-quantized ``model``; ``reference`` is the float
    model (serialized, or its path) that the measure step times and compares against;
    ``calib``: the calibration data the pipeline opened; ``base_dir``: the folder external
    data is relative to (the input model's)."""
    dtype, why = resolve_activation_type(getattr(options, "activation_type", "auto"))
    reduced, reduced_why = int8_reduced_ops(options)
    report = Int8Report(dtype, why, options.calib_method, sorted(reduced), reduced_why)
    exclude = tuple(options.exclude)
    plan = plan_qdq(model, exclude=exclude)
    specs = input_specs(model)
    # Small batches: peak memory is one batch's activations of every calibrated tensor.
    fixed = any(s.fixed_batch is not None for s in specs)
    data = calib if fixed else calib.batched(CALIB_BATCH)
    stats = collect(
        model, [v.name for v in [*plan.roots, *plan.shared] if v.name], data,
        method=options.calib_method,
        progress=progress,
    )  # fmt: skip
    report.calibration_seconds = round(stats.seconds, 3)
    report.calibration_samples = stats.samples
    report.statistics_bytes = stats.nbytes
    params = _params(stats, options.calib_method, options.percentile, dtype)
    # Weight MatMul/Gemm anywhere (If/Loop bodies too) can run int8 with run-time ranges.
    dynamic = {op.lower() for op in dynamic_candidates(model)}
    families = (frozenset(plan.families) | dynamic) & DEFAULT_FAMILIES
    mode = {True: "cached", False: "off"}.get(tune, tune) if isinstance(tune, bool) else tune
    pinned = set(options.int8_families or ())  # empty: not pinned; ["none"]: all float
    if pinned:
        unknown = pinned - set(DEFAULT_FAMILIES) - set(SWITCHES) - {"none"}
        if unknown:
            raise OnnxcompError(f"int8-families: unknown families {sorted(unknown)}")
        families, mode = frozenset(pinned - {"none"}), "off"
        report.decided_by = "recipe (int8-families)"
    measure = mode != "off" and bool(families) and reference is not None
    switchable = _switchable(model, families)
    # Trials rebuild from a serialized copy; the first candidate is the model itself.
    base = opaque_types.to_proto(model).SerializeToString() if measure else b""

    def build(families: frozenset[str], m: ir.Model | None = None) -> tuple[ir.Model, Any]:
        if m is None:
            m = opaque_types.from_proto(onnx.load_from_string(base))
            if base_dir is not None:  # external data stays relative to the model's folder
                ir.external_data.set_base_dir(m.graph, base_dir)
        static = families - SWITCHES
        if "dynamic" in families:
            static -= {"matmul", "gemm"}
        p = plan_qdq(m, exclude=exclude, families=static)
        InsertQDQPass(p, params, dtype)(m)
        if "dynamic" in families:
            ops = {op for op, fam in (("MatMul", "matmul"), ("Gemm", "gemm")) if fam in families}
            dynamic = DynamicMatMulPass(frozenset(ops), exclude=frozenset(exclude))
            dynamic(m)
            p.dynamic = dynamic.rewritten
            for name in p.dynamic:
                p.kept_float.pop(name, None)
        if "skip_layernorm" not in families:
            KeepLayerNormUnfusedPass()(m)
        # Weights of ops that stay float: int8 in the file, decoded once at load.
        decode = DecodeAtLoadPass()
        decode(m)
        p.decoded_at_load = len(decode.converted)
        RemoveUnusedNodesPass()(m)
        TopologicalSortPass()(m)
        return m, p

    cache_key = cached = None
    if measure:
        cache_key = measure_cache.key(base, params_digest(params), _judged_options(options))
        cached = measure_cache.load(cache_key) if mode == "cached" else None
    if cached is not None:
        families = frozenset(cached["families"]) & (families | SWITCHES)
        report.families_dropped = dict(cached.get("dropped", {}))
        report.latency_ratio, report.fidelity = cached.get("latency"), cached.get("fidelity")
        report.fidelity_metric = cached.get("fidelity_metric", "")
        report.decided_by = f"this machine's cached measurement ({cached.get('stored', '?')})"
        best, best_plan = build(families)
    else:
        best, best_plan = build(families, m=model)
    if measure and cached is None:
        bench = Bench(reference, data, base_dir=base_dir, options=options)
        families, best, best_plan = measure_step.tune(
            families, best, best_plan, build, bench, report, switchable
        )
        report.decided_by = "measured now (thread CPU time, 1 thread)"
        assert cache_key is not None
        measure_cache.store(cache_key, {
            "families": sorted(families), "dropped": report.families_dropped,
            "latency": report.latency_ratio, "fidelity": report.fidelity,
            "fidelity_metric": report.fidelity_metric,
        })  # fmt: skip
    report.families = sorted(families)
    report.tensors = len(best_plan.roots) + len(best_plan.shared)
    report.quantized_ops = _count_ops(best_plan)
    report.kept_float = dict(best_plan.kept_float)
    report.decoded_at_load = best_plan.decoded_at_load
    report.dynamic = list(best_plan.dynamic)
    return best, report


def params_digest(params: Any) -> str:
    """A digest of the calibrated ranges (what the calibration data decided)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        for part in params[name] if isinstance(params[name], tuple) else (params[name],):
            h.update(np.asarray(part).tobytes())
    return h.hexdigest()


def _judged_options(options: CompressOptions) -> dict[str, Any]:
    """What shapes the int8 graph or judges it, beyond the model and the ranges."""
    fn = options.metric_fn
    return {
        "exclude": sorted(options.exclude), "activation_type": options.activation_type,
        "weight_range": options.weight_range, "task": options.task,
        "task_arg": list(options.task_arg),
        "metric_fn": fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn)),
        "judge": measure_step.JUDGE_REVISION,
    }  # fmt: skip


def _switchable(model: ir.Model, families: frozenset[str]) -> frozenset[str]:
    """Switches worth a trial on this model: each one changes its graph."""
    found = set()
    if families & {"matmul", "gemm"}:
        found.add("dynamic")
    if fusable_adds(model):
        found.add("skip_layernorm")
    return frozenset(found)


def _params(stats: Statistics, method: str, percentile: float, dtype: str):
    params = {}
    for name, (lo, hi) in stats.ranges(method, percentile).items():
        params[name] = activation_params(lo, hi, dtype)
    return params


def _count_ops(plan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in plan.nodes:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
