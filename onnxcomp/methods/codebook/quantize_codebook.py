"""Codebook quantization: each weight becomes ``Gather(codebook, codes)`` (x channel scale).

A b-bit k-means codebook per tensor (optionally over channel-normalised values, when a
scale per output channel buys a clearly smaller error) replaces every float weight. With
calibration data the codebook is fitted on importance-weighted values (H = X^T X of the
layer input, diagonal) and codes are chosen GPTQ-style, layer by layer in rounds so each
layer sees the inputs the already-quantized layers before it produce.

The decode (Cast/unpack -> Gather -> Mul) reads initializers only: onnxruntime folds it at
session creation, so the model runs at fp32 speed with fp32 memory. This is a download
and disk-size mode; ``--pack`` (pack.py) stores the codes below 8 bits or sparse.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import insert_at_front
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Use, Weight, find_weights
from onnxcomp.io.data import DataSource
from onnxcomp.methods.codebook.budget import (
    Plan,
    TaskTrials,
    later_savings,
    plan_bits,
    stored_bytes,
)
from onnxcomp.methods.codebook.pack import Emitter, Form, choose, emit_codes
from onnxcomp.methods.weights.decode_at_load import QDQ, SHAPE_READERS
from onnxcomp.numerics.codebook import (
    Codebook,
    fit_codebook,
    gptq_assign,
    refit_values,
    weighted_error,
)
from onnxcomp.passes.report import QuantRecord

logger = logging.getLogger(__name__)

BITS = range(1, 9)
# A channel scale must cut the (importance-weighted) error by this much to be kept ...
CHANNEL_GAIN = 0.9
# ... and cost at most this fraction of the codes' bytes.
CHANNEL_COST = 0.1
# ... unless it cuts the error at least this much.
CHANNEL_MUST = 0.5
MIN_ELEMENTS = 64
VECTOR_BITS = 8
# Assign codes, refit the values to the data, assign again: rounds of refitting.
REFITS = 2


@dataclass
class CodebookRecord(QuantRecord):
    """A QuantRecord plus the storage chosen: ``k`` codes, per tensor or channel-scaled."""

    k: int = 0
    storage: str = ""


def relative_error(original: np.ndarray, decoded: np.ndarray) -> float:
    """||decoded - original|| / ||original||: a layer's output error on isotropic inputs."""
    norm = float(np.linalg.norm(original))
    return float(np.linalg.norm(decoded - original)) / norm if norm else 0.0


def model_bytes(model: ir.Model) -> int:
    """The serialized model's bytes (its tensors', past protobuf's 2 GB)."""
    from onnxcomp.io.model_io import tensor_bytes

    try:
        return ir.serde.serialize_model(model).ByteSize()
    except (ValueError, OverflowError):  # past 2 GB: the graph is noise beside the tensors
        return tensor_bytes(model)


def _everything(weight: Weight) -> bool:
    return True


def _constants(model: ir.Model, *, vectors: bool) -> list[Weight]:
    """Float constants of at least MIN_ELEMENTS that no weight slot reads.

    ``vectors``: the one-dimensional ones (biases, norm scales), 8-bit codebooks, which
    keep them within float rounding noise of the layer outputs at a quarter of the bytes.
    Otherwise the rest (an LSTM's W and R, a table a Slice reads): codebooks like the
    weights', a scale per row of their first long axis (an LSTM gate row)."""
    out = []
    for graph in [model.graph, *model.graph.subgraphs()]:
        for value in graph.initializers.values():
            t = value.const_value
            if t is None or value.dtype != ir.DataType.FLOAT or t.size < MIN_ELEMENTS:
                continue
            long_axes = [i for i, d in enumerate(t.shape.numpy()) if d > 1]
            if (len(long_axes) == 1) != vectors or not long_axes:
                continue
            if value.is_graph_input() or value.is_graph_output() or not value.uses():
                continue
            uses = list(value.uses())
            if any(u.node.op_type in SHAPE_READERS or u.node.op_type in QDQ for u in uses):
                continue
            if not vectors and not np.isfinite(t.numpy()).all():
                continue
            axis = None if vectors else long_axes[0]
            out.append(Weight(value, graph, [Use(u.node, u.idx, axis) for u in uses]))
    return out


class CodebookQuantizePass(ir.passes.InPlacePass):
    def __init__(
        self,
        bits: int = 4,
        *,
        include: Callable[[Weight], bool] = _everything,
        calib: DataSource | None = None,
        pack: bool = False,
        bits_per_weight: dict[str, int] | None = None,
        bits_of: Callable[[Weight], int | None] | None = None,
        threads: int = 0,
        target_bytes: int | None = None,
        task: Any = None,
    ) -> None:
        super().__init__()
        self.bits, self.include, self.calib, self.pack = bits, include, calib, pack
        self.bits_per_weight = dict(bits_per_weight or {})
        self.bits_of = bits_of  # a layer's own bits (recipes), for every tensor it reaches
        self.threads = threads
        # the packed file's size to fit (budget.py), and the task options its trials judge by
        self.target_bytes, self.task = target_bytes, task
        self.plan: Plan | None = None
        self.records: list[CodebookRecord] = []
        self.recovered: list = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.records, self.recovered = [], []
        weights = [
            w
            for w in find_weights(model, MIN_ELEMENTS)
            if w.value.dtype == ir.DataType.FLOAT and self.include(w)
        ]
        seen = {id(w.value) for w in weights}
        others = _constants(model, vectors=False)
        weights += [w for w in others if id(w.value) not in seen and self.include(w)]
        seen = {id(w.value) for w in weights}
        vectors = [
            v
            for v in _constants(model, vectors=True)
            if id(v.value) not in seen and self.include(v)
        ]
        for v in vectors:  # at most one codebook value per 8 elements: the table must pay
            size = v.value.const_value.size if v.value.const_value is not None else 0
            bits = min(VECTOR_BITS, max(self.bits, int(np.log2(max(size, 1) / 8))))
            self.bits_per_weight.setdefault(v.name, bits)
        weights += vectors
        pinned = {v.name for v in vectors} | set(self.bits_per_weight)
        if self.bits_of is not None:
            for w in weights:
                own = self.bits_of(w)
                if own is not None:
                    self.bits_per_weight[w.name] = own
                    pinned.add(w.name)
        originals = {w.name: w.array.astype(np.float32) for w in weights}
        books: dict[str, Codebook] = {}
        if self.target_bytes is not None:
            books.update(self._budget(model, weights, originals, pinned))
        if self.calib is not None:
            books.update(self._fit_with_data(model, weights))
        for w in weights:
            if w.name not in books:
                books[w.name] = self._fit(w, originals[w.name], None)
        names = NameAllocator(model)
        self._pool: dict = {}
        cursors: dict[int, ir.Node] = {}
        for w in weights:
            self._write(w, books[w.name], originals[w.name], names, cursors)
        if self.records:
            before = sum(r.bytes_before for r in self.records)
            after = sum(r.bytes_after for r in self.records)
            logger.info("codebook: %d weights, %d -> %d B", len(self.records), before, after)
        return ir.passes.PassResult(model, modified=bool(self.records))

    def _bits(self, name: str) -> int:
        return self.bits_per_weight.get(name, self.bits)

    def _budget(
        self,
        model: ir.Model,
        weights: list[Weight],
        originals: dict[str, np.ndarray],
        pinned: set[str],
    ) -> dict[str, Codebook]:
        """Fewer bits for some tensors until the packed file fits ``target_bytes``
        (budget.py); the weight-only fits it made, which a fit without data keeps."""
        assert self.target_bytes is not None
        fits = {w.name: self._fit(w, originals[w.name], None) for w in weights}
        estimate = model_bytes(model) - later_savings(model, set(fits))
        estimate += sum(stored_bytes(fits[n]) - originals[n].nbytes for n in fits)
        free = {w.name for w in weights if w.name not in pinned}
        bits = {w.name: self._bits(w.name) for w in weights}
        trials = None
        if self.calib is not None:
            base = {n: b.decode() for n, b in fits.items()}
            trials = TaskTrials(model, base, self.calib, self.task)
        self.plan = plan_bits(
            weights, fits, originals, free, bits,
            lambda w, a, b: self._fit(w, a, None, b),
            estimate=estimate, target=self.target_bytes, trials=trials,
        )  # fmt: skip
        self.bits_per_weight.update(self.plan.bits)
        fits.update(self.plan.books)
        return {} if self.calib is not None else fits

    def _fit(
        self, w: Weight, array: np.ndarray, importance: np.ndarray | None, bits: int = 0
    ) -> Codebook:
        """Per tensor, or channel-scaled where that pays (error and bytes)."""
        bits = bits or self._bits(w.name)
        book = fit_codebook(array, bits, importance)
        axis = w.channel_axis
        if axis is None or array.ndim < 2:
            return book
        cheap = 4 * array.shape[axis] <= CHANNEL_COST * array.size * bits / 8
        scaled = fit_codebook(array, bits, importance, axis)
        gain = weighted_error(array, scaled, importance) / max(
            weighted_error(array, book, importance), 1e-30
        )
        # Depthwise kernels (9 weights a channel) pay for their scales only when the
        # channels differ so much that one codebook fails them.
        return scaled if gain < (CHANNEL_GAIN if cheap else CHANNEL_MUST) else book

    def _fit_with_data(self, model: ir.Model, weights: list[Weight]) -> dict[str, Codebook]:
        """Importance-weighted codebooks and GPTQ codes, round by round on the student."""
        from onnxcomp.methods.recover.driver import RecoverRecord, collect_hessians, output_energy
        from onnxcomp.methods.recover.layers import find_layers

        wanted = {w.name for w in weights}
        layers = find_layers(model, lambda w: w.name in wanted)
        by_round = defaultdict(list)
        for layer in layers:
            by_round[layer.round].append(layer)
        books: dict[str, Codebook] = {}
        for r in sorted(by_round):
            assert self.calib is not None
            accs = collect_hessians(model, by_round[r], self.calib, self.threads)
            for layer in by_round[r]:
                hs = [a.matrix for a in accs[layer.hessian_key]]
                array = layer.weight.array.astype(np.float32)
                mats = layer.matrices(array)
                diag = [np.broadcast_to(np.diag(h), m.shape) for h, m in zip(hs, mats, strict=True)]
                importance = layer.from_matrices([np.asarray(d) for d in diag], array.shape)
                book = self._fit(layer.weight, array, importance)
                plain = book.decode()
                scales, done = [], 0
                for mat in mats:
                    rows = mat.shape[0]
                    scales.append(None if book.scale is None else book.scale[done : done + rows])
                    done += rows
                zero = 0 if book.zero_code else None
                for step in range(REFITS + 1):
                    codes = [
                        gptq_assign(m, h, book.values, rs, (m == 0) if zero == 0 else None, zero)
                        for m, h, rs in zip(mats, hs, scales, strict=True)
                    ]
                    if step < REFITS:
                        book.values = refit_values(mats, hs, codes, book.values, scales, zero == 0)
                num = base = den = 0.0
                parts = zip(mats, layer.matrices(plain), hs, codes, scales, strict=True)
                for mat, pm, h, c, rs in parts:
                    dec = book.values[c] * (1.0 if rs is None else rs[:, None])
                    num += output_energy(mat - dec, h)
                    base += output_energy(mat - pm, h)
                    den += output_energy(mat, h)
                book.codes = layer.from_matrices(codes, array.shape).astype(np.uint8)
                books[layer.weight.name] = book
                layer.weight.value.const_value = ir.tensor(book.decode(), name=layer.weight.name)
                self.recovered.append(
                    RecoverRecord(
                        layer.name,
                        layer.weight.name,
                        layer.node.op_type,
                        "gptq",
                        base / den if den else 0.0,
                        num / den if den else 0.0,
                        f"codebook k={book.values.size}",
                    )
                )
        return books

    def _write(
        self,
        w: Weight,
        book: Codebook,
        original: np.ndarray,
        names: NameAllocator,
        cursors: dict[int, ir.Node],
    ) -> None:
        graph, base = w.graph, w.name or "weight"
        em = Emitter(graph, names, base, self._pool)
        form: Form = choose(book.codes, 0 if book.zero_code else None, self.pack)
        codes = emit_codes(em, book.codes, form)
        shape = tuple(original.shape)
        table = em.const("codebook", book.values.astype(np.float32))
        out = em.op("Gather", [table, codes], ir.DataType.FLOAT, shape, "decoded", axis=0)
        extra = 0
        if book.scale is not None and book.axis is not None:
            bshape = [1] * len(shape)
            bshape[book.axis] = -1
            s = em.const("channel_scale", book.scale.astype(np.float32).reshape(bshape))
            out = em.op("Mul", [out, s], ir.DataType.FLOAT, shape, "scaled")
            extra = book.scale.nbytes
        for added in em.nodes:
            insert_at_front(graph, added, cursors)
        out.dtype, out.shape = ir.DataType.FLOAT, ir.Shape(shape)
        out.name = names.new(f"{base}_decoded")  # what inspect and debug show
        w.value.replace_all_uses_with(out)
        if graph.initializers.get(base) is w.value:
            del graph.initializers[base]
        k = book.values.size
        kind = "channel-scaled " if extra else ""
        self.records.append(
            CodebookRecord(
                base,
                w.op_types,
                shape,
                book.axis,
                original.nbytes,
                form.nbytes + book.values.nbytes + extra,
                float(np.max(np.abs(book.decode() - original))) if original.size else 0.0,
                relative_error=relative_error(original, book.decode()),
                k=k,
                storage=f"{kind}codebook k={k}, {form.describe()}",
            )
        )
