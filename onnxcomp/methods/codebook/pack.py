"""Packed storage for small-integer tensors (codebook indices), decoded by onnxruntime at load.

Three forms; ``choose`` picks per tensor the one with the fewest bytes:

- ``plain``: one uint8 per element (what an unpacked model stores);
- ``bits``: b-bit codes packed into uint8/uint32/uint64 words (two 4-bit codes a byte,
  ten 3-bit codes per uint32...), decoded by ``BitShift`` + ``Mod``;
- ``sparse``: a pruned tensor's non-zero codes with the gaps between their positions
  (Deep Compression's relative indexing: a gap wider than the delta field gets a filler
  entry holding the zero code), decoded by ``CumSum`` + ``ScatterElements``.

Every decode op reads initializers only, so onnxruntime's constant folding runs the
chain once at session creation and the optimized graph holds the plain tensor: decode is
exact and costs nothing per inference. Ops are opset <= 13 (BitShift, Mod, CumSum,
ScatterElements, ConstantOfShape), so no model needs an upgrade past the quantizer's 13.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator

WORDS = (np.uint8, np.uint32, np.uint64)
# Bytes an extra decode node costs in the file (its names, attributes, constants such as
# shift tables; measured 60-200 B): tiny tensors stay plain: counted so a
# form that saves a handful of bytes is not chosen for its decode ops.
OVERHEAD = 80


@dataclass
class Form:
    kind: str  # "plain" | "bits" | "sparse" | "mask"
    nbytes: int  # payload bytes (what the choice compares)
    bits: int = 8  # code bits (bits / sparse values)
    delta_bits: int = 0  # sparse: bits of one gap
    zero: int = 0  # sparse: the code every missing element holds
    sparsity: float = 0.0  # sparse: fraction of elements not stored

    def describe(self) -> str:
        if self.kind == "sparse":
            return f"sparse {self.sparsity:.0%} ({self.bits}+{self.delta_bits}-bit)"
        if self.kind == "mask":
            return f"sparse {self.sparsity:.0%} ({self.bits}-bit + bitmask)"
        return f"{self.bits}-bit packed" if self.kind == "bits" else "uint8"


def code_bits(codes: np.ndarray) -> int:
    top = int(codes.max()) if codes.size else 0
    return max(1, top.bit_length())


def word_for(bits: int, count: int) -> tuple[type, int, int]:
    """(word dtype, codes per word, bytes) of the smallest packing of ``count`` codes."""
    best = None
    for dt in WORDS:
        per = (np.dtype(dt).itemsize * 8) // bits
        # the words, and the shift table that unpacks them (shared, but count it once)
        nbytes = (-(-count // per) + per) * np.dtype(dt).itemsize
        if best is None or nbytes < best[2]:
            best = (dt, per, nbytes)
    assert best is not None
    return best


def bitpack(codes: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """(words [m, 1], codes per word); code e sits at bits (e % per) * bits of word e // per."""
    flat = codes.ravel().astype(np.uint64)
    dt, per, _ = word_for(bits, flat.size)
    m = -(-flat.size // per)
    padded = np.zeros(m * per, np.uint64)
    padded[: flat.size] = flat
    shifts = (np.arange(per, dtype=np.uint64) * np.uint64(bits))[None, :]
    words = np.bitwise_or.reduce(padded.reshape(m, per) << shifts, axis=1)
    return words.astype(dt).reshape(m, 1), per


def gaps(codes: np.ndarray, zero: int, delta_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, codes) of the non-``zero`` elements, fillers inserted for wide gaps."""
    flat = codes.ravel()
    pos = np.flatnonzero(flat != zero)
    if pos.size == 0:
        pos = np.array([0])
    limit = (1 << delta_bits) - 1
    d = np.diff(np.concatenate([[-1], pos]))
    fillers = (d - 1) // limit  # entries needed before each real one
    total = int(pos.size + fillers.sum())
    out_d = np.full(total, limit, np.int64)
    out_c = np.full(total, zero, np.int64)
    idx = np.arange(pos.size) + np.cumsum(fillers)  # where each real entry lands
    out_d[idx] = d - fillers * limit
    out_c[idx] = flat[pos]
    return out_d, out_c


def bitmask(codes: np.ndarray, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """(1 where a code is not ``zero``, [zero] + the kept codes): entry cumsum(mask) * mask
    of the second is each element's code."""
    flat = codes.ravel()
    mask = (flat != zero).astype(np.uint8)
    return mask, np.concatenate([[zero], flat[mask.astype(bool)]]).astype(np.int64)


def choose(codes: np.ndarray, zero: int | None, pack: bool) -> Form:
    """The smallest storage of ``codes`` (plain when ``pack`` is off)."""
    n = codes.size
    plain = Form("plain", n)
    if not pack:
        return plain
    bits = code_bits(codes)
    best = plain
    if bits < 8:
        nbytes = word_for(bits, n)[2] + 5 * OVERHEAD
        if nbytes < best.nbytes:
            best = Form("bits", nbytes, bits)
    if zero is not None:
        stored = int(np.count_nonzero(codes != zero))
        if stored * 8 < n * 7:
            for db in range(2, 9):
                d, c = gaps(codes, zero, db)
                nbytes = word_for(bits, c.size)[2] + word_for(db, d.size)[2] + 14 * OVERHEAD
                if nbytes < best.nbytes:
                    best = Form("sparse", nbytes, bits, db, zero, 1 - stored / n)
        if stored < n:
            nbytes = word_for(1, n)[2] + word_for(bits, stored + 1)[2] + 10 * OVERHEAD
            if nbytes < best.nbytes:
                best = Form("mask", nbytes, bits, 0, zero, 1 - stored / n)
    return best


# Constants of the decode chains (shifts, axes, moduli), shared per graph.
SHARED_BELOW = 256


class Emitter:
    """Appends decode nodes to a list; initializers go to ``graph``.

    Intermediate values carry no type (no value_info in the file: onnxruntime infers
    it and folds them away); small constants are shared by every chain of a graph."""

    def __init__(
        self, graph: ir.Graph, names: NameAllocator, base: str, pool: dict | None = None
    ) -> None:
        self.graph, self.names, self.base = graph, names, base
        self.pool = pool if pool is not None else {}
        self.nodes: list[ir.Node] = []

    def const(self, tag: str, array: np.ndarray) -> ir.Value:
        if array.nbytes > SHARED_BELOW:
            return add_initializer(self.graph, self.names.new(f"{self.base}_{tag}"), array)
        key = (id(self.graph), array.dtype.str, array.shape, array.tobytes())
        if key not in self.pool:
            name = self.names.new(f"decode_{tag.rsplit('_', 1)[-1]}")
            self.pool[key] = add_initializer(self.graph, name, array)
        return self.pool[key]

    def op(
        self, op: str, inputs: list[ir.Value], dtype: ir.DataType, shape, tag: str, **attrs
    ) -> ir.Value:
        # Terse names (the node unnamed, values numbered): a chain is folded away at load
        # and its names only cost file bytes (a third of a small conv net's file otherwise).
        node = ir.node(op, inputs, attributes=attrs)
        out = node.outputs[0]
        self.pool["count"] = self.pool.get("count", 0) + 1
        out.name = self.names.new(f"~{self.pool['count']:x}")
        self.nodes.append(node)
        return out


def _unpack(em: Emitter, codes: np.ndarray, bits: int, tag: str) -> ir.Value:
    """int32 [n] codes from a packed-words initializer."""
    n = codes.size
    words, per = bitpack(codes, bits)
    dt = words.dtype.type
    w = em.const(f"{tag}_packed", words)
    wt = ir.DataType.from_numpy(words.dtype)
    m = words.shape[0]
    int32 = ir.DataType.INT32
    masked = w
    if bits < words.dtype.itemsize * 8:  # a full-width code needs no shift or mask
        shifts = (np.arange(per, dtype=np.uint64) * bits).astype(dt)[None]
        shifted = em.op(
            "BitShift", [w, em.const(f"{tag}_shifts", shifts)], wt, (m, per), f"{tag}_shifted",
            direction="RIGHT",
        )  # fmt: skip
        modulus = em.const(f"{tag}_modulus", np.array(1 << bits, dt))
        masked = em.op("Mod", [shifted, modulus], wt, (m, per), f"{tag}_codes")
    as_int = em.op("Cast", [masked], int32, (m, per), f"{tag}_int", to=int32)
    flat = em.op(
        "Reshape", [as_int, em.const(f"{tag}_flat", np.array([-1], np.int64))],
        ir.DataType.INT32, (m * per,), f"{tag}_flat",
    )  # fmt: skip
    if m * per == n:
        return flat
    starts = em.const(f"{tag}_start", np.array([0], np.int64))
    ends = em.const(f"{tag}_end", np.array([n], np.int64))
    return em.op("Slice", [flat, starts, ends], ir.DataType.INT32, (n,), f"{tag}_trimmed")


def emit_codes(em: Emitter, codes: np.ndarray, form: Form) -> ir.Value:
    """int32 codes of ``codes``' shape, decoded from ``form``'s storage."""
    shape = tuple(codes.shape)
    if form.kind == "plain":
        stored = em.const("codes", codes.astype(np.uint8))
        return em.op("Cast", [stored], ir.DataType.INT32, shape, "codes_int", to=ir.DataType.INT32)
    if form.kind == "bits":
        flat = _unpack(em, codes, form.bits, "codes")
    elif form.kind == "mask":
        mask_bits, kept = bitmask(codes, form.zero)
        mask = _unpack(em, mask_bits, 1, "mask")
        axis = em.const("axis", np.array(0, np.int32))
        rank = em.op("CumSum", [mask, axis], ir.DataType.INT32, None, "rank")
        slot = em.op("Mul", [rank, mask], ir.DataType.INT32, None, "slot")
        values = _unpack(em, kept, form.bits, "values")
        flat = em.op("Gather", [values, slot], ir.DataType.INT32, None, "gathered", axis=0)
    else:
        d, c = gaps(codes, form.zero, form.delta_bits)
        deltas = em.op(
            "Cast", [_unpack(em, d, form.delta_bits, "gaps")], ir.DataType.INT64, (d.size,),
            "gaps_long", to=ir.DataType.INT64,
        )  # fmt: skip
        axis = em.const("axis", np.array(0, np.int64))
        ends = em.op("CumSum", [deltas, axis], ir.DataType.INT64, (d.size,), "ends")
        one = em.const("one", np.array([1], np.int64))
        positions = em.op("Sub", [ends, one], ir.DataType.INT64, (d.size,), "positions")
        values = _unpack(em, c, form.bits, "values")
        size = em.const("size", np.array([codes.size], np.int64))
        fill = ir.tensor(np.array([form.zero], np.int32))
        n = codes.size
        dense = em.op("ConstantOfShape", [size], ir.DataType.INT32, (n,), "zeros", value=fill)
        flat = em.op(
            "ScatterElements", [dense, positions, values], ir.DataType.INT32, (codes.size,),
            "scattered", axis=0,
        )  # fmt: skip
    if len(shape) == 1:
        return flat
    target = em.const("shape", np.array(shape, np.int64))
    return em.op("Reshape", [flat, target], ir.DataType.INT32, shape, "codes_int")


def decode_exact(codes: np.ndarray, form: Form) -> np.ndarray:
    """The numpy twin of ``emit_codes`` (tests check the two agree element for element)."""
    if form.kind == "plain":
        return codes.astype(np.int32)
    if form.kind == "bits":
        words, per = bitpack(codes, form.bits)
        shifts = (np.arange(per, dtype=np.uint64) * form.bits).astype(words.dtype)[None]
        out = (words.astype(np.uint64) >> shifts.astype(np.uint64)) % np.uint64(1 << form.bits)
        out = out.ravel()[: codes.size]
        return out.astype(np.int32).reshape(codes.shape)
    if form.kind == "mask":
        mask, kept = bitmask(codes, form.zero)
        m = mask.astype(np.int64)
        return kept[np.cumsum(m) * m].astype(np.int32).reshape(codes.shape)
    d, c = gaps(codes, form.zero, form.delta_bits)
    out = np.full(codes.size, form.zero, np.int32)
    out[np.cumsum(d) - 1] = c
    return out.reshape(codes.shape)
