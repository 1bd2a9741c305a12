"""What trains in a compressed graph, found by the storage forms onnxcomp writes, and the
write-back of trained values into the same graph by tensor name (no torch here).

Forms (methods/weights, methods/codebook):

- int8: ``DequantizeLinear(q int8, scale, 0)`` and the decode-at-load ``Mul(Cast(q), s)``:
  the latent float weight and the scale train; codes are simulated by straight-through
  rounding, the same division, half-to-even rounding and clamp as numerics/scales.py.
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
    scale: str  # its float32 scale initializer
    scale_shape: tuple[int, ...]  # the scale broadcast against the codes
    qmax: int


@dataclass
class CodebookForm:
    table: str  # float32 values
    codes: str  # uint8 codes (plain storage)
    decoded: str  # the Gather's output (the codes' gradient reaches the latent weight there)


@dataclass
class FloatForm:
    name: str
    half: bool  # stored float16 (read through a Cast to float)


Forms = tuple[list[Int8Form], list[CodebookForm], list[FloatForm]]


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
    books: list[CodebookForm] = []
    taken: set[str] = set()
    for node in graph:
        if node.op_type == "DequantizeLinear" and node.domain == "":
            form = _dq_form(graph, node, reduced)
            if form is not None:
                int8.append(form)
                taken.update((form.codes, form.scale))
        elif node.op_type == "Mul" and node.domain == "":
            form = _cast_mul_form(graph, node, reduced)
            if form is not None:
                int8.append(form)
                taken.update((form.codes, form.scale))
        elif node.op_type == "Gather" and node.domain == "":
            book = _codebook_form(graph, node)
            if book is not None:
                books.append(book)
                taken.update((book.table, book.codes))
    floats = []
    for name, value in graph.initializers.items():
        if name in taken or value.is_graph_input() or value.is_graph_output():
            continue
        if value.dtype == ir.DataType.FLOAT and _trainable_uses(value):
            floats.append(FloatForm(name, False))
        elif value.dtype == ir.DataType.FLOAT16 and all(
            u.node.op_type == "Cast" and u.node.attributes.get_int("to", 0) == 1
            and _trainable_uses(u.node.outputs[0])
            for u in value.uses()
        ):  # fmt: skip
            floats.append(FloatForm(name, True))
    return int8, books, floats


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
    q_name, s_name = _init(graph, cast.inputs[0]), _init(graph, node.inputs[1])
    if q_name is None or s_name is None:
        return None
    q, scale = const(cast.inputs[0]), const(node.inputs[1])
    assert q is not None and scale is not None
    if q.dtype != np.int8 or scale.dtype != np.float32 or q.ndim == 0:
        return None
    if scale.ndim > q.ndim or len(list(node.inputs[1].uses())) != 1:  # type: ignore[union-attr]
        return None
    shape = (1,) * (q.ndim - scale.ndim) + tuple(scale.shape)
    return Int8Form(q_name, s_name, shape, _qmax(q, reduced))


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
        if array.dtype != old.dtype.numpy() or tuple(array.shape) != tuple(old.shape.numpy()):
            raise ValueError(
                f"write-back of '{name}' would change it: {array.dtype}{list(array.shape)}"
            )
        if not np.array_equal(array, old.numpy()):
            value.const_value = ir.Tensor(np.ascontiguousarray(array), name=name)
            changed.append(name)
    return changed
