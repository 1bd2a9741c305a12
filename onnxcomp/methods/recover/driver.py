"""Sequential layer-wise reconstruction (GPTQ, SparseGPT) over the student as it is built.

Layers go in rounds (see layers.assign_rounds): one onnxruntime pass over the calibration
data per round collects X^T X for every layer of the round from the *partially
compressed* student, so each layer compensates the error of the layers before it.
Memory: one batch of activations plus one K x K matrix per layer input of the round.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.naming import NameAllocator
from onnxcomp.io.data import DataSource
from onnxcomp.methods.prune.magnitude import sparsity_mask
from onnxcomp.methods.recover.layers import RebuildLayer
from onnxcomp.methods.weights.quantize_weights import dequantize_weight
from onnxcomp.numerics.gptq import gptq_quantize, rtn_quantize, weight_scale
from onnxcomp.numerics.hessian import HessianAccumulator
from onnxcomp.numerics.obs import DEFAULT_DAMP
from onnxcomp.numerics.sparsegpt import sparsegpt_prune
from onnxcomp.passes.report import PruneRecord, QuantRecord
from onnxcomp.runtime import capture

logger = logging.getLogger(__name__)


@dataclass
class RecoverRecord:
    """What recovery did to one layer; errors are ||W X - W' X||^2 / ||W X||^2 on the data.

    ``baseline`` is the error of the plain method (rounding, magnitude pruning) on the
    same layer and inputs, ``error`` the recovered one; for bias correction both are the
    RMS of the per-channel mean shift relative to the RMS of the teacher's output mean.
    """

    layer: str
    weight: str
    op_type: str
    method: str
    baseline: float | None
    error: float | None
    note: str = ""


def collect_hessians(
    model: ir.Model, layers: list[RebuildLayer], calib: DataSource, threads: int = 0
) -> dict[tuple, list[HessianAccumulator]]:
    """One streamed run: X^T X per distinct (input, geometry), one per Conv group."""
    accs: dict[tuple, list[HessianAccumulator]] = {}
    readers: dict[tuple, RebuildLayer] = {}
    for layer in layers:
        if layer.hessian_key not in accs:
            features = layer.features()
            accs[layer.hessian_key] = [HessianAccumulator(features) for _ in range(layer.groups)]
            readers[layer.hessian_key] = layer
    names = [layer.input_name for layer in readers.values()]
    for _, values in capture.stream(model, names, calib, threads, only=True):
        for key, layer in readers.items():
            x = np.asarray(values[layer.input_name], np.float32)
            for chunk in layer.rows(x):
                for acc, rows in zip(accs[key], chunk, strict=True):
                    acc.update(rows)
        del values
    return accs


def rebuild(
    model: ir.Model,
    layers: list[RebuildLayer],
    calib: DataSource,
    method: str,
    *,
    bits: int = 8,
    per_channel: bool = True,
    counts: dict[str, int] | None = None,
    damp: float = DEFAULT_DAMP,
    threads: int = 0,
) -> tuple[list[RecoverRecord], list[QuantRecord | PruneRecord]]:
    """Rebuild ``layers`` in place with "gptq" or "sparsegpt" (``counts``: zeros per weight)."""
    names = NameAllocator(model)
    by_round: dict[int, list[RebuildLayer]] = defaultdict(list)
    for layer in layers:
        by_round[layer.round].append(layer)
    recs: list[RecoverRecord] = []
    out: list[QuantRecord | PruneRecord] = []
    qrec: QuantRecord | PruneRecord
    for r in sorted(by_round):
        start = time.perf_counter()
        accs = collect_hessians(model, by_round[r], calib, threads)
        for layer in by_round[r]:
            hs = [a.matrix for a in accs[layer.hessian_key]]
            if method == "gptq":
                rec, qrec = _quantize_layer(layer, hs, names, bits, per_channel, damp)
            else:
                target = (counts or {}).get(layer.weight.name, 0)
                rec, qrec = _prune_layer(layer, hs, target, damp)
            recs.append(rec)
            out.append(qrec)
            logger.info(
                "%s %s: output error %.3g (plain %.3g)",
                method,
                layer.name,
                rec.error or 0.0,
                rec.baseline or 0.0,
            )
        logger.info(
            "round %d: %d layer(s) in %.2f s", r, len(by_round[r]), time.perf_counter() - start
        )
    return recs, out


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def output_energy(w: np.ndarray, h: np.ndarray) -> float:
    """trace(W H W^T): the summed squared output of W on inputs whose X^T X is H."""
    w = np.asarray(w, np.float64)
    return float(np.einsum("ij,jk,ik->", w, h, w))


def _quantize_layer(
    layer: RebuildLayer,
    hs: list[np.ndarray],
    names: NameAllocator,
    bits: int,
    per_channel: bool,
    damp: float,
) -> tuple[RecoverRecord, QuantRecord]:
    array = layer.weight.array.astype(np.float32)
    mats = layer.matrices(array)
    # One scale for the whole tensor when per-tensor, even across Conv groups.
    tensor_scale = (
        None if per_channel else weight_scale(array.reshape(1, -1), bits=bits, per_channel=False)
    )
    codes, scales = [], []
    num = base = den = 0.0
    for mat, h in zip(mats, hs, strict=True):
        keep = mat == 0
        q, s = gptq_quantize(
            mat,
            h,
            bits=bits,
            per_channel=per_channel,
            scale=tensor_scale,
            keep_zero=keep if keep.any() else None,
            damp=damp,
        )
        s_col = s.reshape(-1, 1) if s.ndim else s
        plain_q, _ = rtn_quantize(mat, bits=bits, per_channel=per_channel, scale=s)
        num += output_energy(mat - q * s_col, h)
        base += output_energy(mat - np.where(keep, 0, plain_q) * s_col, h)
        den += output_energy(mat, h)
        codes.append(q)
        scales.append(s)
    q_full = layer.from_matrices(codes, array.shape).astype(np.int8)
    scale = np.concatenate([np.atleast_1d(s) for s in scales]) if per_channel else scales[0]
    axis = layer.channel_axis if per_channel else None
    qrec = write_dequantize(layer, q_full, scale.astype(np.float32), axis, names)
    qrec.max_abs_error = float(np.max(np.abs(_dequant(q_full, scale, axis) - array)))
    rec = RecoverRecord(
        layer.name,
        layer.weight.name,
        layer.node.op_type,
        "gptq",
        _ratio(base, den),
        _ratio(num, den),
        f"{bits}-bit, {'per channel' if per_channel else 'per tensor'}",
    )
    return rec, qrec


def _dequant(q: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return q.astype(np.float32) * np.float32(scale)
    shape = [1] * q.ndim
    shape[axis] = -1
    return q.astype(np.float32) * scale.reshape(shape)


def _prune_layer(
    layer: RebuildLayer, hs: list[np.ndarray], count: int, damp: float
) -> tuple[RecoverRecord, PruneRecord]:
    array = layer.weight.array.astype(np.float32)
    before = int(np.count_nonzero(array == 0))
    mats = layer.matrices(array)
    magnitude = layer.matrices(np.where(sparsity_mask(array, count / array.size), 0, array))
    new_mats = []
    num = base = den = 0.0
    done = 0
    for i, (mat, h) in enumerate(zip(mats, hs, strict=True)):
        # Split the tensor's count over groups by cumulative rounding: the total is exact.
        upto = round(count * (i + 1) / len(mats))
        new = sparsegpt_prune(mat, h, count=upto - done, damp=damp)
        done = upto
        num += output_energy(mat - new, h)
        base += output_energy(mat - magnitude[i], h)
        den += output_energy(mat, h)
        new_mats.append(new)
    pruned = layer.from_matrices(new_mats, array.shape).astype(np.float32)
    note = ""
    if num > base:  # the Hessian is a sample estimate: on some layers it loses to magnitude
        pruned = layer.from_matrices(magnitude, array.shape).astype(np.float32)
        num, note = base, ", magnitude kept (SparseGPT was worse here)"
    layer.weight.value.const_value = ir.tensor(pruned, name=layer.weight.name)
    after = int(np.count_nonzero(pruned == 0))
    rec = RecoverRecord(
        layer.name,
        layer.weight.name,
        layer.node.op_type,
        "sparsegpt",
        _ratio(base, den),
        _ratio(num, den),
        f"{after / array.size:.1%} zeros{note}",
    )
    return rec, PruneRecord(layer.weight.name, layer.weight.op_types, array.size, before, after)


def write_dequantize(
    layer: RebuildLayer, q: np.ndarray, scale: np.ndarray, axis: int | None, names: NameAllocator
) -> QuantRecord:
    """Swap the layer's float weight for DequantizeLinear(q, scale, 0), as QuantizeWeightsPass."""
    weight = layer.weight
    base = weight.name
    original = weight.array
    dq = dequantize_weight(weight, q, scale, axis, names)
    weight.graph.insert_before(layer.node, dq)
    return QuantRecord(
        base,
        weight.op_types,
        tuple(original.shape),
        axis,
        original.nbytes,
        q.nbytes + scale.nbytes + scale.size,
        0.0,
    )
