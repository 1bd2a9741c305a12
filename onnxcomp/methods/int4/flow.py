"""The int4 flow of compress: 4-bit MatMul/Gemm blocks, everything else int8.

Without calibration data the blocks are rounded to nearest with a searched range per
block. With ``--calib`` the inputs of every candidate layer are streamed once through
the float model for H = X^T X: GPTQ then picks the codes (numerics/gptq_blocks.py) and
a layer whose relative output error stays above MAX_OUTPUT_ERROR keeps int8 weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.io.data import DataSource
from onnxcomp.methods.int4.gather_int4 import GatherInt4Pass
from onnxcomp.methods.int4.quantize_int4 import (
    MAX_OUTPUT_ERROR,
    QuantizeInt4Pass,
    int4_slot,
    runtime_fuses_int4,
)
from onnxcomp.numerics.blocks import BlockQuant
from onnxcomp.passes.report import QuantRecord

logger = logging.getLogger(__name__)

# Largest drop of the model's outputs (the worst component's error, or a continuous task
# metric's drop) int4 may cost on calibration data before its worst layers go int8.
OUTPUT_TOLERANCE = 0.02


def layer_hessians(
    model: ir.Model, weights: list[Weight], data: Callable[[], DataSource]
) -> dict[str, np.ndarray]:
    """Mean X^T X of the activation input of each MatMul/Gemm weight, one streamed run
    (``data`` is only asked for when some layer can be read)."""
    from onnxcomp.numerics.hessian import HessianAccumulator
    from onnxcomp.runtime import capture

    readers: dict[str, str] = {}
    for weight in weights:
        node = weight.uses[0].node
        if node.graph is not model.graph:
            continue  # an If/Loop body's tensor is no output the session can add: rounding
        x = node.inputs[0]
        if x is None or not x.name or bool(node.attributes.get_int("transA", 0)):
            continue
        readers[weight.name] = x.name
    if not readers:
        return {}
    features = {w.name: w.array.shape[0] for w in weights if w.name in readers}
    for w in weights:
        node = w.uses[0].node
        if node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0)):
            features[w.name] = w.array.shape[1]
    accs = {name: HessianAccumulator(features[name]) for name in readers}
    for _, values in capture.stream(model, sorted(set(readers.values())), data()):
        for name, x_name in readers.items():
            accs[name].update(np.asarray(values[x_name], np.float32))
        del values
    return {name: acc.matrix for name, acc in accs.items()}


def awq_step(
    model: ir.Model,
    candidates: list[Weight],
    hessians: dict[str, np.ndarray],
    block_size: int,
    symmetric: bool,
    solutions: dict[str, tuple[np.ndarray, BlockQuant]] | None = None,
) -> list[str]:
    """Activation-aware scales (methods/int4/awq.py) on every group of int4 candidates
    reading one activation, kept where GPTQ's own output error drops with them (the
    scale is searched with rounding; GPTQ already repairs part of what it fixes); their
    H becomes that of the scaled activation. The GPTQ codes of the kept variant go into
    ``solutions`` (weight name -> the [K, N] weight solved, its codes)."""
    from onnxcomp.graph.naming import NameAllocator
    from onnxcomp.methods.int4.awq import MIN_GAIN, awq_scale
    from onnxcomp.numerics.gptq_blocks import gptq_blocks, output_error
    from onnxcomp.passes.channel_scale import apply_scale, scale_groups, weight_kn

    def solved(ws: list[np.ndarray], h: np.ndarray) -> tuple[float, list[BlockQuant]]:
        quants = [gptq_blocks(w, h, block_size, symmetric=symmetric) for w in ws]
        return sum(output_error(w, q, h) for w, q in zip(ws, quants, strict=True)), quants

    names = NameAllocator(model)
    scaled, folded, before, after = 0, 0, 0.0, 0.0
    for group in scale_groups(candidates):
        if any(w.name not in hessians for w in group.weights):
            continue
        h = hessians[group.weights[0].name]
        s, alpha, _, _ = awq_scale(group, h, block_size, symmetric)
        ws = [weight_kn(w) for w in group.weights]
        base, quants = solved(ws, h)
        err, kept = base, ws
        if s is not None:
            inv = 1.0 / s.astype(np.float64)
            scaled_ws = [w * s[:, None] for w in ws]
            err, scaled_quants = solved(scaled_ws, h * np.outer(inv, inv))
            if err <= base * (1 - MIN_GAIN):
                quants, kept = scaled_quants, scaled_ws
        if solutions is not None:
            solutions.update(
                {w.name: (k, q) for w, k, q in zip(group.weights, kept, quants, strict=True)}
            )
        if kept is ws:
            before, after = before + base, after + base
            continue
        assert s is not None  # kept a scaled variant
        before, after = before + base, after + err
        where = apply_scale(group, s, names)
        assert where is not None  # a Mul is allowed here
        scaled += 1
        folded += where.startswith("folded")
        logger.info("awq %s: alpha %.1f, %.4g -> %.4g, %s", group.name, alpha, base, err, where)
        inv = 1.0 / s.astype(np.float64)
        for w in group.weights:
            hessians[w.name] = hessians[w.name] * np.outer(inv, inv)
    if not scaled:
        return []
    return [
        f"activation-aware scales (AWQ) on {scaled} activations ({folded} folded into the op "
        f"making them, {scaled - folded} by an inserted Mul): 4-bit output error (GPTQ) "
        f"{before:.4g} -> {after:.4g} summed over layers"
    ]


def output_guard(model: ir.Model, make_pass, calib: Callable[[], DataSource], options: Any):
    """The layers that stay int8 so the model's outputs stay within OUTPUT_TOLERANCE of
    the float model's on calibration data (metrics.Judge: the task's metric, or the worst
    output component), fewest first: the layers with the largest int4 error go first,
    the count bisected on trial copies (GPTQ solved once per layer)."""
    from onnxcomp.methods.recover.guard import output_fidelity
    from onnxcomp.methods.weights.quantize_weights import QuantizeWeightsPass

    def drop(keep: frozenset[str]) -> tuple[float, Any]:
        trial = model.clone()
        p = make_pass(keep)
        p(trial)
        QuantizeWeightsPass(include=p.include)(trial)  # what int4 left goes int8 after it
        (fid,), gauge = output_fidelity(model, [trial], calib(), options)
        return 1.0 - fid, (p, gauge)

    first, (p, gauge) = drop(frozenset())
    if first <= OUTPUT_TOLERANCE or not p.records:
        return frozenset(), None
    order = [n for n, _ in sorted(p.errors.items(), key=lambda kv: (-kv[1], kv[0]))]
    order = [n for n in order if n not in p.skipped]
    lo, hi = 0, len(order)  # keeping order[:hi] int8 fits (all int8: the int8 model)
    found: dict[int, float | None] = {len(order): None}
    while lo < hi:
        mid = (lo + hi) // 2
        d, _ = drop(frozenset(order[:mid]))
        if d <= OUTPUT_TOLERANCE:
            hi, found[mid] = mid, d
        else:
            lo = mid + 1
    keep = frozenset(order[:hi])
    after = found.get(hi)
    tail = f"{after:.4f}" if after is not None else "not measured (every layer int8)"
    return keep, (
        f"{len(keep)} of {len(order)} int4 layers kept int8 so the model's {gauge} drop on "
        f"calibration data stays <= {OUTPUT_TOLERANCE:g} (all int4: {first:.4f}; now {tail})"
    )


def unfused_int4(model: ir.Model) -> list[str]:
    """Weights of int4 DequantizeLinear nodes that onnxruntime's optimized graph still holds.

    onnxruntime fuses DQ -> MatMul into MatMulNBits but not every neighbourhood (1.32: a
    MatMul feeding Relu stays unfused), so the fusion is checked, not assumed.
    """
    import os
    import tempfile

    import onnx
    import onnxruntime as ort

    int4 = (ir.DataType.INT4, ir.DataType.UINT4)
    if not any(
        n.op_type == "DequantizeLinear" and n.inputs[0] is not None and n.inputs[0].dtype in int4
        for n in model.graph
    ):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        so = ort.SessionOptions()
        so.optimized_model_filepath = path
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        blob = ir.to_proto(model).SerializeToString()
        ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        del blob
        optimized = onnx.load(path, load_external_data=False)
    types = {t.name: t.data_type for t in optimized.graph.initializer}
    packed = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    return sorted(
        n.input[0]
        for n in optimized.graph.node
        if n.op_type == "DequantizeLinear" and types.get(n.input[0]) in packed
    )


def quantize_int4(
    model: ir.Model,
    *,
    block_size: int,
    symmetric: bool,
    include,
    calib: Callable[[], DataSource] | None = None,
    awq: bool = True,
    options: Any = None,
) -> tuple[list[QuantRecord], dict[str, str], list[str]]:
    """int4 MatMul/Gemm (GPTQ and sensitivity when ``calib`` is given) and embedding tables.

    Returns the records, the weights left for int8 with the reason, and notes."""
    notes: list[str] = []
    fuses, version = runtime_fuses_int4()
    if not fuses:
        notes.append(
            f"onnxruntime {version} does not fuse int4 DequantizeLinear into MatMulNBits "
            "(needs >= 1.19): int4 weights are dequantized on every run"
        )
    solver = sensitivity = None
    hessians: dict[str, np.ndarray] = {}
    solutions: dict[str, tuple[np.ndarray, BlockQuant]] = {}
    if calib is not None:
        from onnxcomp.numerics.gptq_blocks import gptq_blocks, output_error

        candidates = [
            w
            for w in find_weights(model)
            if w.value.dtype == ir.DataType.FLOAT and include(w) and int4_slot(w) is None
        ]
        hessians = layer_hessians(model, candidates, calib)
        if awq:
            notes += awq_step(model, candidates, hessians, block_size, symmetric, solutions)

        def solver(weight: Weight, w: np.ndarray) -> BlockQuant | None:
            h = hessians.get(weight.name)
            if h is None:
                return None
            done = solutions.get(weight.name)
            if done is not None and np.array_equal(done[0], w):
                return done[1]  # solved while judging the scales, on this very weight
            solved = gptq_blocks(w, h, block_size, symmetric=symmetric)
            solutions[weight.name] = (w.copy(), solved)  # a guard trial asks again
            return solved

        def sensitivity(weight: Weight, w: np.ndarray, quant: BlockQuant) -> float:
            h = hessians.get(weight.name)
            return output_error(w, quant, h) if h is not None else 0.0

    def make_pass(keep: frozenset[str]) -> QuantizeInt4Pass:
        return QuantizeInt4Pass(
            block_size=block_size, symmetric=symmetric, include=include, solver=solver,
            sensitivity=sensitivity, keep_int8=keep,
        )  # fmt: skip

    keep: frozenset[str] = frozenset()
    if calib is not None and hessians:  # the data fed the layers: it can judge the model
        keep, note = output_guard(model, make_pass, calib, options)
        notes += [note] if note else []
    p = make_pass(keep)
    p(model)
    tables = GatherInt4Pass(block_size=block_size, include=include)
    tables(model)
    kind = "symmetric int4" if symmetric else "asymmetric uint4"
    how = "GPTQ from calibration data" if calib is not None else "rounded to nearest"
    int8 = len(set(p.skipped) - {r.name for r in tables.records})
    notes.append(
        f"{len(p.records)} MatMul/Gemm weights {kind} in blocks of {block_size} ({how}), "
        f"fused into MatMulNBits by onnxruntime; {int8} weights int8 instead"
    )
    if tables.records:
        notes.append(
            f"{len(tables.records)} embedding tables int4 in row blocks of {block_size} "
            "(onnxruntime GatherBlockQuantized, com.microsoft domain)"
        )
    if p.records and fuses:
        left = unfused_int4(model)
        if left:
            notes.append(
                f"onnxruntime {version} left {len(left)} int4 weights unfused (dequantized on "
                f"every run): {', '.join(left[:5])}{', ...' if len(left) > 5 else ''}"
            )
    sensitive = [n for n, why in p.skipped.items() if why.startswith("sensitive")]
    if sensitive:
        more = ", ..." if len(sensitive) > 5 else ""
        notes.append(
            f"{len(sensitive)} layers kept int8: int4 output error > {MAX_OUTPUT_ERROR:g} "
            f"on calibration data ({', '.join(sensitive[:5])}{more})"
        )
    skipped = {k: v for k, v in p.skipped.items() if k not in tables.skipped}
    skipped.update(tables.skipped)
    skipped = {k: v for k, v in skipped.items() if not any(r.name == k for r in tables.records)}
    return p.records + tables.records, skipped, notes
