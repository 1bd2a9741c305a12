"""Full int8: calibrate once, place Q/DQ, then measure and keep float what does not pay.

The flow (``quantize_int8``): plan where Q/DQ go on the weight-quantized model, collect
statistics of exactly those tensors in one streamed onnxruntime pass, insert the pairs,
then time the result against the float model in onnxruntime (1 thread) and compare
outputs. When it is slower than float or loses fidelity, op families are dropped one at
a time (shape ops first, Conv last) as long as each drop measurably helps.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import (
    RemoveUnusedNodesPass,
    TopologicalSortPass,
)

from onnxcomp import opaque_types
from onnxcomp.data import DataSource, input_specs, open_data
from onnxcomp.errors import OnnxcompError
from onnxcomp.metrics import cosine_rows
from onnxcomp.options import ACTIVATION_TYPES, CompressOptions
from onnxcomp.passes.decode_at_load import DecodeAtLoadPass
from onnxcomp.passes.dynamic_matmul import DynamicMatMulPass, dynamic_candidates
from onnxcomp.passes.layernorm_guard import KeepLayerNormUnfusedPass, fusable_adds
from onnxcomp.passes.quantize_activations import InsertQDQPass
from onnxcomp.passes.shape_inference import InferShapesPass
from onnxcomp.quantization.calibrate import Statistics, collect
from onnxcomp.quantization.numeric import activation_params
from onnxcomp.quantization.placement import DEFAULT_FAMILIES, plan_qdq
from onnxcomp.quantization.saturation import resolve_weight_bits

logger = logging.getLogger(__name__)

# Order in which families are tried out of int8 when the model got slower or worse:
# cheap data movement first, the big GEMMs last.
DROP_ORDER = (
    "dynamic", "shape", "concat", "mul", "add", "pool", "activation", "matmul_act", "gemm",
    "matmul", "conv", "skip_layernorm",
)  # fmt: skip
# Steps that *add* a switch instead of dropping a family: "dynamic" quantizes the inputs
# of weight MatMul/Gemm at run time (passes/dynamic_matmul.py) instead of with a
# calibrated Q/DQ pair; "skip_layernorm" lets onnxruntime fuse residual Add + LayerNorm
# (passes/layernorm_guard.py says why it is blocked by default).
SWITCHES = frozenset({"dynamic", "skip_layernorm"})
# 1 - cosine above this triggers the search: int8 transformers sit near 0.99, and
# dropping op families rarely buys fidelity there, only time.
FIDELITY_TOLERANCE = 1e-2
COMPUTE_FAMILIES = frozenset({"conv", "gemm", "matmul"})
SPEEDUP_MARGIN = 0.97  # a drop must make the model at least 3% faster to count
MAX_PASSES = 3  # rounds over DROP_ORDER while the model is still slower than float
CALIB_BATCH = 4  # samples per calibration run: peak memory vs onnxruntime call overhead


@dataclass
class Int8Report:
    activation_type: str
    activation_type_reason: str
    calib_method: str
    reduced_ops: list[str] = field(default_factory=list)  # their weights in [-63, 63]
    weight_range_reason: str = ""
    calibration_seconds: float = 0.0
    calibration_samples: int = 0
    statistics_bytes: int = 0
    tensors: int = 0
    quantized_ops: dict[str, int] = field(default_factory=dict)
    kept_float: dict[str, str] = field(default_factory=dict)
    families_dropped: dict[str, str] = field(default_factory=dict)
    decoded_at_load: int = 0  # int8 weights of float ops, decoded once by onnxruntime at load
    latency_ratio: float | None = None  # int8 / float, onnxruntime, 1 thread
    cosine: float | None = None  # mean output cosine vs float on calibration data
    trials: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """Op types whose int8 weights get 7 bits under ``options`` (quantization/saturation.py)."""
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
    *,
    progress: bool = True,
    tune: bool = True,
    base_dir: str | None = None,
) -> tuple[ir.Model, Int8Report]:
    """Quantize activations of a weight-quantized ``model``; ``reference`` is the float
    model (serialized, or its path) that the measure step times and compares against;
    ``base_dir``: the folder external data is relative to (the input model's)."""
    dtype, why = resolve_activation_type(getattr(options, "activation_type", "auto"))
    reduced, reduced_why = int8_reduced_ops(options)
    report = Int8Report(dtype, why, options.calib_method, sorted(reduced), reduced_why)
    exclude = tuple(options.exclude)
    plan = plan_qdq(model, exclude=exclude)
    specs = input_specs(model)
    # Small batches: peak memory is one batch's activations of every calibrated tensor.
    fixed = any(s.fixed_batch is not None for s in specs)
    data = open_data(options.calib, specs, batch_size=None if fixed else CALIB_BATCH)
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
    measure = tune and bool(families) and reference is not None
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

    best, best_plan = build(families, m=model)
    if measure:
        bench = Bench(reference, data, base_dir=base_dir)
        families, best, best_plan = _tune(
            families, best, best_plan, build, bench, report, switchable
        )
    report.tensors = len(best_plan.roots) + len(best_plan.shared)
    report.quantized_ops = _count_ops(best_plan)
    report.kept_float = dict(best_plan.kept_float)
    report.decoded_at_load = best_plan.decoded_at_load
    report.dynamic = list(best_plan.dynamic)
    return best, report


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


def _next_trial(
    step: str, families: frozenset[str], switchable: frozenset[str], slow: bool
) -> frozenset[str] | None:
    """The candidate one greedy step tries, or None when the step does not apply."""
    if step in SWITCHES:
        return families | {step} if step in switchable and step not in families else None
    if step not in families or (not slow and step in COMPUTE_FAMILIES):
        return None  # a fast model keeps its int8 GEMMs: fidelity never buys speed back
    trial = families - {step}
    if "dynamic" in trial and not trial & {"matmul", "gemm"}:
        trial -= {"dynamic"}
    return trial


def _tune(families, model, plan, build, bench: Bench, report: Int8Report, switchable):
    """Greedy: drop a family when that makes the model measurably faster or closer.

    Cheap families (shape, add, mul, concat, pool, activation, activation x activation
    MatMul) are tried even when int8 already beats float: a requantizing Add or Reshape
    around attention can cost more than it saves (the MiniLM export ran 3x faster with
    its Adds float). The big GEMMs are only tried when the model is slower than float."""
    incumbent = bench.session(model)
    ratio, cos = bench.latency(incumbent), bench.cosine(incumbent)
    report.trials.append({"families": sorted(families), "latency_ratio": ratio, "cosine": cos})
    tried: set[frozenset[str]] = {frozenset(families)}
    for _ in range(MAX_PASSES):  # once the Convs went float, a lone int8 Add may not pay
        changed = False
        for fam in DROP_ORDER:
            slow = ratio > SPEEDUP_MARGIN
            loose = 1.0 - cos > FIDELITY_TOLERANCE
            trial = _next_trial(fam, families, switchable, slow)
            if trial is None or trial in tried:
                continue
            tried.add(trial)
            m, p = build(trial)
            session = bench.session(m)
            c = bench.cosine(session)
            halves_error = loose and (1.0 - c) < 0.5 * (1.0 - cos)
            # Both candidates timed in one interleaved run: a ratio from an earlier run
            # carries that run's noise (on a loaded machine, more than the 3% margin).
            ratio, r = bench.latency(incumbent, session)
            report.trials.append({"families": sorted(trial), "latency_ratio": r, "cosine": c})
            # Slower than float, any measurable gain counts; already faster, a cheap family
            # only goes float when that keeps the output as close.
            faster = r < ratio * SPEEDUP_MARGIN and (slow or c >= cos - FIDELITY_TOLERANCE / 10)
            # Fidelity alone never buys a slower model: what loses accuracy *without a
            # speed gain* goes float (on vgg19 a float classifier cost 30% of the speed).
            closer = halves_error and r <= ratio * 1.03
            if faster or closer:
                what = "slower" if faster else "less accurate"
                before, after = ("without", "with") if fam in SWITCHES else ("with", "without")
                report.families_dropped[fam] = (
                    f"{what} {before} it: {ratio:.2f}x float latency, cosine {cos:.5f}; "
                    f"{r:.2f}x, cosine {c:.5f} {after}"
                )
                families, model, plan, ratio, cos = trial, m, p, r, c
                incumbent = session
                changed = True
            del session
        if not changed or ratio <= SPEEDUP_MARGIN:
            break
    report.latency_ratio, report.cosine = round(ratio, 3), round(cos, 6)
    return families, model, plan


class Bench:
    """Latency and output cosine of candidates against the float model, same process."""

    def __init__(
        self,
        reference: bytes | str,
        data: DataSource,
        *,
        budget: float = 0.3,
        base_dir: str | None = None,
    ) -> None:
        self.budget = budget
        try:
            self.ref = _session(reference, base_dir)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxcompError(
                f"the float model does not run in onnxruntime, so int8 cannot be measured "
                f"against it ({first}); use --no-measure"
            ) from None
        first = next(iter(data), None)
        if first is None:
            raise OnnxcompError("calibration data is empty")
        names = {i.name for i in self.ref.get_inputs()}
        self.feeds = [{k: v for k, v in first.feed.items() if k in names}]
        self.timing_feed = _one_sample(self.feeds[0], self.ref)
        self.ref_out = [self.ref.run(None, f) for f in self.feeds]

    def session(self, model: ir.Model):
        return _session(model)

    def cosine(self, session) -> float:
        """Mean row cosine of every float output on the first calibration batch."""
        cos = []
        for feed, ref in zip(self.feeds, self.ref_out, strict=True):
            for a, b in zip(ref, session.run(None, feed), strict=True):
                if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
                    n = a.shape[0] if a.ndim > 1 else 1
                    rows = cosine_rows(a.reshape(n, -1).astype(np.float64), b.reshape(n, -1))
                    cos.append(float(rows.mean()))
        return float(np.mean(cos)) if cos else 1.0

    def latency(self, *sessions) -> Any:
        """Each candidate's latency over float latency, 1 thread, timed together."""
        ratios = _latency_ratios(self.ref, sessions, self.timing_feed, self.budget)
        rounded = [round(r, 3) for r in ratios]
        return rounded[0] if len(rounded) == 1 else rounded


def _session(model: bytes | str | ir.Model, base_dir: str | None = None):
    from onnxcomp.runtime.session import make_session

    return make_session(model, threads=1, base_dir=base_dir)


def _one_sample(feed: dict[str, np.ndarray], session) -> dict[str, np.ndarray]:
    """Latency at batch 1 when the batch axis is free (what a service runs)."""
    out = {}
    for spec in session.get_inputs():
        value = feed[spec.name]
        dynamic = spec.shape and not isinstance(spec.shape[0], int)
        out[spec.name] = value[:1] if dynamic and value.ndim and value.shape[0] > 1 else value
    return out


def _latency_ratios(ref, cands, feed, budget: float) -> list[float]:
    """Median run time of each of ``cands`` over ``ref``, runs interleaved so noise
    cancels.

    Runs fill ``budget`` seconds per candidate; a model slower than that gets 3 rounds,
    each long enough to time well.
    """
    sessions = [ref, *cands]
    for sess in sessions:  # warm-up: first runs allocate
        sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    stop = time.perf_counter() + budget * len(cands)
    while len(times[0]) < 3 or (time.perf_counter() < stop and len(times[0]) < 200):
        for sess, out in zip(sessions, times, strict=True):
            t = time.perf_counter()
            sess.run(None, feed)
            out.append(time.perf_counter() - t)
    base = max(float(np.median(times[0])), 1e-9)
    return [float(np.median(t)) / base for t in times[1:]]
