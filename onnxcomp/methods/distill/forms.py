"""What trains in a compressed graph, found by the storage forms onnxcomp writes, and the
write-back of trained values into the same graph by tensor name (no torch here).

Forms (methods/weights, methods/codebook):

- int8: ``DequantizeLinear(q int8, scale, 0)``, the decode-at-load ``Mul(Cast(q), s)``
  (``s`` float32, or float16 behind a Cast) and dynamic int8 ``MatMulInteger(x, q)`` with
  the weight scale in the ``Mul`` after it: the latent float weight and the scale train;
  codes are simulated by straight-through rounding, the same division, half-to-even
  rounding and clamp as numerics/scales.py.
- int4: ``DequantizeLinear(q int4|uint4 [K, N], scale [blocks, N], zero, axis=0,
  block_size)`` (what onnxruntime fuses into MatMulNBits): the latent weight and every
  block's scale train, codes clamp to [-8, 7] (or [0, 15] around the fixed zero point).
- codebook: ``Gather(table, Cast(codes uint8))``: the table's values train, codes are
  reassigned to the nearest value (a channel-scale Mul after it is a float tensor).
- float: weights and vectors left float32, and float16 vectors behind a ``Cast``.

Only initializer values change on write-back: structure, names and opsets stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import const
from onnxcomp.numerics.blocks import expand
from onnxcomp.numerics.scales import quantize

# Float inputs that are parameters of the op (not data-dependent constants such as
# BatchNorm's running statistics, Clip bounds or epsilons).
TRAINABLE_SLOTS: dict[str, tuple[int, ...] | None] = {
    "MatMul": None, "Gemm": None, "Conv": (1, 2), "ConvTranspose": (1, 2), "Add": None,
    "Sub": None, "Mul": None, "BatchNormalization": (1, 2), "Gather": (0,),
}  # fmt: skip
REDUCED_QMAX, FULL_QMAX = 63, 127


@dataclass
class Int8Form:
    codes: str  # the int8 initializer
    scale: str  # its scale initializer
    scale_shape: tuple[int, ...]  # the scale broadcast against the codes
    qmax: int
    half: bool = False  # the scale is stored float16 (read through a Cast)


@dataclass
class Int4Form:
    codes: str  # int4 or uint4 [K, N]
    scale: str  # float32 [blocks, N]
    zero: str | None  # uint4 [blocks, N] (asymmetric), fixed
    block_size: int
    lo: int
    hi: int
    axis: int = 0  # the blocks run along it: 0 for MatMul weights [K, N], 1 for table rows


@dataclass
class CodebookForm:
    table: str  # float32 values
    codes: str  # uint8 codes (plain storage)
    decoded: str  # the Gather's output (the codes' gradient reaches the latent weight there)


@dataclass
class FloatForm:
    name: str
    half: bool  # stored float16 (read through a Cast to float)


@dataclass
class Forms:
    int8: list[Int8Form]
    books: list[CodebookForm]
    floats: list[FloatForm]
    int4: list[Int4Form]

    def __iter__(self):  # (int8, books, floats), as the first slice unpacked them
        return iter((self.int8, self.books, self.floats))


def _init(graph: ir.Graph, value: ir.Value | None) -> str | None:
    """The name of ``value`` when it is a (non-input) initializer of ``graph``."""
    if value is None or value.name is None or const(value) is None:
        return None
    return value.name if graph.initializers.get(value.name) is value else None


def find_forms(model: ir.Model, reduced: bool = False) -> Forms:
    """Every trainable tensor of the main graph, by form.

    ``reduced``: the run gave int8 kernels 7-bit weights (methods/weights/saturation.py);
    a weight whose codes all fit [-63, 63] then trains within them, others within 127."""
    graph = model.graph
    int8: list[Int8Form] = []
    int4: list[Int4Form] = []
    books: list[CodebookForm] = []
    taken: set[str] = set()
    for node in graph:
        if node.op_type == "DequantizeLinear" and node.domain == "":
            form = _dq_form(graph, node, reduced)
            if form is not None:
                int8.append(form)
                taken.update((form.codes, form.scale))
            block = _int4_form(graph, node)
            if block is not None:
                int4.append(block)
                taken.update(n for n in (block.codes, block.scale, block.zero) if n)
        elif node.op_type == "GatherBlockQuantized" and node.domain == "com.microsoft":
            block = _int4_rows(graph, node)
            if block is not None:
                int4.append(block)
                taken.update(n for n in (block.codes, block.scale, block.zero) if n)
        elif node.op_type == "Mul" and node.domain == "":
            form = _cast_mul_form(graph, node, reduced) or _integer_form(graph, node, reduced)
            if form is not None:
                int8.append(form)
                taken.update((form.codes, form.scale))
        elif node.op_type == "Gather" and node.domain == "":
            book = _codebook_form(graph, node)
            if book is not None:
                taken.update((book.table, book.codes))
                if not _shared(graph, book):  # a pooled table or codes: left as they are
                    books.append(book)
    floats = []
    for name, value in graph.initializers.items():
        if name in taken or value.is_graph_input() or value.is_graph_output():
            continue
        if _one_number(value):
            continue  # a function's constant, not a weight
        if value.dtype == ir.DataType.FLOAT and _trainable_uses(value):
            floats.append(FloatForm(name, False))
        elif value.dtype == ir.DataType.FLOAT16 and all(
            u.node.op_type == "Cast" and u.node.attributes.get_int("to", 0) == 1
            and _trainable_uses(u.node.outputs[0])
            for u in value.uses()
        ):  # fmt: skip
            floats.append(FloatForm(name, True))
    return Forms(int8, books, floats, int4)


def _one_number(value: ir.Value) -> bool:
    """One-number float constants (GELU's 0.5 and 0.044715, an attention's 1/sqrt(d))
    define the function, not its weights: trained, they moved (0.044715 -> 0.04483 on
    the esp MiniLM) and onnxruntime no longer fused the tanh GELU it recognises by those
    values (distilled 1.27-1.30x fp32 where the same structure untrained ran 1.31-1.33x)."""
    tensor = value.const_value
    return tensor is not None and tensor.size == 1


def _trainable_uses(value: ir.Value) -> bool:
    uses = list(value.uses())
    if not uses:
        return False
    for use in uses:
        slots = TRAINABLE_SLOTS.get(use.node.op_type, ())
        if use.node.domain != "" or (slots is not None and use.idx not in slots):
            return False
    return True


def _qmax(codes: np.ndarray, reduced: bool) -> int:
    top = int(np.abs(codes.astype(np.int32)).max()) if codes.size else 0
    return REDUCED_QMAX if reduced and top <= REDUCED_QMAX else FULL_QMAX


def _dq_form(graph: ir.Graph, node: ir.Node, reduced: bool) -> Int8Form | None:
    q_name, s_name = _init(graph, node.inputs[0]), _init(graph, node.inputs[1])
    if q_name is None or s_name is None:
        return None
    if node.attributes.get_int("block_size", 0) != 0:  # 4-bit blocks: not this form
        return None
    q, scale = const(node.inputs[0]), const(node.inputs[1])
    assert q is not None and scale is not None
    zero = const(node.inputs[2]) if len(node.inputs) > 2 else None
    if q.dtype != np.int8 or (zero is not None and np.any(zero)) or q.ndim == 0:
        return None
    shape = [1] * q.ndim
    if scale.size > 1:
        axis = node.attributes.get_int("axis", 1)
        shape[axis % q.ndim] = scale.size
    return Int8Form(q_name, s_name, tuple(shape), _qmax(q, reduced))


def _cast_mul_form(graph: ir.Graph, node: ir.Node, reduced: bool) -> Int8Form | None:
    cast = node.inputs[0].producer() if node.inputs[0] is not None else None
    if cast is None or cast.op_type != "Cast":
        return None
    scale_value, half = _scale_source(node.inputs[1])
    q_name, s_name = _init(graph, cast.inputs[0]), _init(graph, scale_value)
    if q_name is None or s_name is None:
        return None
    q, scale = const(cast.inputs[0]), const(scale_value)
    assert q is not None and scale is not None and scale_value is not None
    if q.dtype != np.int8 or scale.dtype != (np.float16 if half else np.float32) or q.ndim == 0:
        return None
    if scale.ndim > q.ndim or len(list(scale_value.uses())) != 1:
        return None
    if len(list(cast.inputs[0].uses())) != 1:  # type: ignore[union-attr]
        return None
    shape = (1,) * (q.ndim - scale.ndim) + tuple(scale.shape)
    return Int8Form(q_name, s_name, shape, _qmax(q, reduced), half)


def _scale_source(value: ir.Value | None) -> tuple[ir.Value | None, bool]:
    """(the value holding a scale, whether it is float16 read through a Cast)."""
    cast = value.producer() if value is not None else None
    if value is None or cast is None or cast.op_type != "Cast":
        return value, False
    if len(list(value.uses())) != 1 or cast.attributes.get_int("to", 0) != 1:
        return None, False
    return cast.inputs[0], True


def _integer_form(graph: ir.Graph, node: ir.Node, reduced: bool) -> Int8Form | None:
    """``Mul(Cast(MatMulInteger(x, q)), Mul(x_scale, w_scale))``: dynamic int8
    (methods/int8/dynamic_matmul.py); the weight scale [N] runs along the codes' last axis."""
    cast = node.inputs[0].producer() if node.inputs[0] is not None else None
    scales = node.inputs[1].producer() if node.inputs[1] is not None else None
    if cast is None or cast.op_type != "Cast" or scales is None or scales.op_type != "Mul":
        return None
    mm = cast.inputs[0].producer() if cast.inputs[0] is not None else None
    if mm is None or mm.op_type != "MatMulInteger" or len(mm.inputs) > 3:
        return None
    scale_value, half = _scale_source(scales.inputs[1])
    q_name, s_name = _init(graph, mm.inputs[1]), _init(graph, scale_value)
    q, scale = const(mm.inputs[1]), const(scale_value)
    if q_name is None or s_name is None or q is None or scale is None:
        return None
    if q.dtype != np.int8 or q.ndim != 2 or scale.dtype != (np.float16 if half else np.float32):
        return None
    if scale.size not in (1, q.shape[1]):
        return None
    if any(len(list(v.uses())) != 1 for v in (mm.inputs[1], scale_value) if v is not None):
        return None
    shape = (1, q.shape[1]) if scale.size > 1 else (1, 1)
    return Int8Form(q_name, s_name, shape, _qmax(q, reduced), half)


def _int4_form(graph: ir.Graph, node: ir.Node) -> Int4Form | None:
    block = node.attributes.get_int("block_size", 0)
    q_name, s_name = _init(graph, node.inputs[0]), _init(graph, node.inputs[1])
    if not block or q_name is None or s_name is None:
        return None
    tensor = graph.initializers[q_name].const_value
    assert tensor is not None
    signed = tensor.dtype == ir.DataType.INT4
    if not signed and tensor.dtype != ir.DataType.UINT4:
        return None
    if len(tensor.shape) != 2 or node.attributes.get_int("axis", 1) != 0:
        return None
    zero = node.inputs[2] if len(node.inputs) > 2 else None
    z_name = _init(graph, zero) if zero is not None else None
    if zero is not None and z_name is None:
        return None
    lo, hi = (-8, 7) if signed else (0, 15)
    return Int4Form(q_name, s_name, z_name, block, lo, hi)


def _int4_rows(graph: ir.Graph, node: ir.Node) -> Int4Form | None:
    """``GatherBlockQuantized(int4 table [V, D], ids, scales [V, D / bs])``: 4-bit
    embedding rows (methods/int4/gather_int4.py), blocks along each row."""
    attrs = node.attributes
    if attrs.get_int("gather_axis", 0) != 0 or attrs.get_int("quantize_axis", 1) != 1:
        return None
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        return None  # zero points: onnxcomp writes symmetric rows
    q_name, s_name = _init(graph, node.inputs[0]), _init(graph, node.inputs[2])
    if q_name is None or s_name is None:
        return None
    tensor = graph.initializers[q_name].const_value
    if tensor is None or tensor.dtype != ir.DataType.INT4 or len(tensor.shape) != 2:
        return None
    return Int4Form(q_name, s_name, None, attrs.get_int("block_size", 128), -8, 7, axis=1)


def _shared(graph: ir.Graph, book: CodebookForm) -> bool:
    table, codes = graph.initializers[book.table], graph.initializers[book.codes]
    return len(list(table.uses())) != 1 or len(list(codes.uses())) != 1


def _codebook_form(graph: ir.Graph, node: ir.Node) -> CodebookForm | None:
    table = _init(graph, node.inputs[0])
    cast = node.inputs[1].producer() if node.inputs[1] is not None else None
    if table is None or cast is None or cast.op_type != "Cast":
        return None
    codes = _init(graph, cast.inputs[0])
    values = const(node.inputs[0])
    if codes is None or values is None or values.dtype != np.float32 or values.ndim != 1:
        return None
    return CodebookForm(table, codes, node.outputs[0].name or "")


def simulated_codes(latent: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """int8 codes of ``latent`` at ``scale`` (broadcast shape): what the straight-through
    forward rounds to, computed as numerics/scales.quantize stores them."""
    scale = np.asarray(scale, np.float32)
    return quantize(latent.astype(np.float32), scale, qmin=-qmax, qmax=qmax)


def block_codes(
    latent: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, form: Int4Form
) -> np.ndarray:
    """4-bit codes [K, N] of ``latent`` at block scales [blocks, N] (and zero points): the
    same division, half-to-even rounding and clamp as numerics/blocks.py (int8-held)."""
    if form.axis == 1:  # row blocks (embedding tables): the transpose's column blocks
        zt = None if zero is None else zero.T
        return np.ascontiguousarray(block_codes(latent.T, scale.T, zt, _columns(form)).T)
    k = latent.shape[0]
    q = np.rint(latent.astype(np.float32) / expand(scale.astype(np.float32), k, form.block_size))
    if zero is not None:
        q += expand(zero.astype(np.float32), k, form.block_size)
    return np.clip(q, form.lo, form.hi).astype(np.int8)


def _columns(form: Int4Form) -> Int4Form:
    return Int4Form(form.codes, form.scale, form.zero, form.block_size, form.lo, form.hi, 0)


def nearest_codes(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each element's nearest codebook entry (ties to the lower index), uint8."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    mids = (sorted_values[1:] + sorted_values[:-1]) / 2
    return order[np.searchsorted(mids, target, side="left")].astype(np.uint8)


def write_back(model: ir.Model, values: dict[str, np.ndarray]) -> list[str]:
    """Replace initializer values by name (dtype and shape must stay); the names changed."""
    graph = model.graph
    changed = []
    for name, array in values.items():
        value = graph.initializers[name]
        old = value.const_value
        assert old is not None
        if old.dtype in (ir.DataType.INT4, ir.DataType.UINT4):
            array = array.astype(old.dtype.numpy())  # int8-held 4-bit codes
        if array.dtype != old.dtype.numpy() or tuple(array.shape) != tuple(old.shape.numpy()):
            raise ValueError(
                f"write-back of '{name}' would change it: {array.dtype}{list(array.shape)}"
            )
        if not np.array_equal(array, old.numpy()):
            # a copy, not np.ascontiguousarray: that returns a scalar as shape [1]
            value.const_value = ir.Tensor(array.copy(order="C"), name=name)
            changed.append(name)
    return changed
