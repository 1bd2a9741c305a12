"""How each weight is stored in a file: dense float, int8, or a codebook (plain, bit-packed
or sparse codes), and how many bytes that costs; for ``inspect``.

A weight slot (Conv/Gemm/MatMul/Gather data) reads either an initializer or the output of
a decode chain whose leaves are all initializers (what onnxruntime folds at load); the
chain's op types say the form, its leaves the bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.weights import _weight_slot

logger = logging.getLogger(__name__)


@dataclass
class StoredWeight:
    name: str
    form: str  # "dense float", "int8", "codebook k=16, 4-bit packed", ...
    elements: int
    bytes: int

    @property
    def bits_per_element(self) -> float:
        return 8 * self.bytes / self.elements if self.elements else 0.0


def _leaves(value: ir.Value, nodes: list[ir.Node], leaves: list[ir.Value]) -> bool:
    """Collect the chain producing ``value``; False when it reads anything but constants.
    Iterative: a slot fed by an activation is walked back until its first non-constant
    source, which on a deep graph (a CTC recognizer after int8: thousands of nodes) is
    past Python's recursion limit."""
    stack = [value]
    while stack:
        v = stack.pop()
        if v.const_value is not None and not v.is_graph_input():
            leaves.append(v)
            continue
        node = v.producer()
        if node is None or node.op_type == "Constant" or node.graph is None:
            return False
        if any(n is node for n in nodes):
            continue
        nodes.append(node)
        stack.extend(i for i in reversed(node.inputs) if i is not None)
    return True


def _form(nodes: list[ir.Node], leaves: list[ir.Value]) -> str:
    ops = {n.op_type for n in nodes}
    if "Gather" in ops:
        gather = next(n for n in nodes if n.op_type == "Gather")
        table = gather.inputs[0]
        k = table.const_value.size if table is not None and table.const_value is not None else 0
        if "ScatterElements" in ops:
            codes = "sparse (gap-coded)"
        elif "CumSum" in ops:
            codes = "sparse (bitmask)"
        elif "BitShift" in ops:
            mod = [n for n in nodes if n.op_type == "Mod"]
            m = mod[0].inputs[1].const_value if mod and mod[0].inputs[1] is not None else None
            bits = int(np.log2(int(m.numpy()))) if m is not None else 8
            codes = f"{bits}-bit packed"
        else:
            codes = "uint8 codes"
        scaled = ", channel-scaled" if "Mul" in ops else ""
        return f"codebook k={k}, {codes}{scaled}"
    dtypes = {v.dtype for v in leaves if v.const_value is not None and v.const_value.size > 1}
    if ir.DataType.INT4 in dtypes or ir.DataType.UINT4 in dtypes:
        return "int4"
    if ir.DataType.INT8 in dtypes or ir.DataType.UINT8 in dtypes:
        return "int8" + (" (decoded at load)" if "DequantizeLinear" not in ops else "")
    return "computed at load"


def storage_forms(model: ir.Model) -> list[StoredWeight]:
    """Every weight slot's storage, once per stored weight, in graph order."""
    _infer_shapes(model)  # a decode chain's element count is its output's shape
    out: dict[str, StoredWeight] = {}
    for graph in [model.graph, *model.graph.subgraphs()]:
        for node in graph:
            for index, _ in _weight_slot(node):
                value = node.inputs[index] if index < len(node.inputs) else None
                if value is None or value.is_graph_input() or (value.name or "") in out:
                    continue
                indices = node.inputs[1] if node.op_type == "Gather" else None
                if indices is not None and _leaves(indices, [], []):
                    continue  # a decode chain's own codebook lookup
                nodes: list[ir.Node] = []
                leaves: list[ir.Value] = []
                if not _leaves(value, nodes, leaves) or not leaves:
                    continue
                if not nodes:  # a plain initializer
                    t = value.const_value
                    assert t is not None
                    if t.size < 16 or not t.dtype.is_floating_point():
                        continue
                    zeros = float(np.mean(t.numpy() == 0))
                    form = "dense " + t.dtype.name.lower()
                    form += f", {zeros:.0%} zeros" if zeros >= 0.05 else ""
                    out[value.name or ""] = StoredWeight(value.name or "", form, t.size, t.nbytes)
                    continue
                shape = value.shape
                elements = (
                    int(np.prod([d for d in shape if isinstance(d, int)])) if shape else 0
                )  # fmt: skip
                unique = {id(v): v for v in leaves}.values()
                nbytes = sum(v.const_value.nbytes for v in unique if v.const_value is not None)
                name = (
                    (value.name or "")
                    .split("/")[0]
                    .removesuffix("_decoded")
                    .removesuffix("_dequantized")
                )
                out[value.name or ""] = StoredWeight(name, _form(nodes, leaves), elements, nbytes)
    return list(out.values())


def _infer_shapes(model: ir.Model) -> None:
    """Shapes of decoded weights: written files carry no inferred shapes (value_info.py)."""
    from onnxcomp.passes.shape_inference import InferShapesPass

    try:
        InferShapesPass()(model)
    except Exception as exc:  # a model onnx cannot infer still gets its storage listed
        logger.debug("shape inference failed: %s", exc)
