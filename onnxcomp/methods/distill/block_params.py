"""A block's parameters from the stored graph, and the original weight its codes round.

AdaRound needs each code's float original laid out as the codes are: it is the
original model's weight feeding the same layer (found by walking back from the block's
anchor in the original), as stored or transposed, accepted only when it rounds to within
one step of the stored codes almost everywhere (a weight rescaled by AWQ or SmoothQuant
does not, and its codes then stay as they are).
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx_ir as ir
import torch

from onnxcomp.graph.edit import const
from onnxcomp.methods.distill.adaround import (
    BlockParams,
    Book,
    Codes,
    Compiled,
    Float,
    adaround_codes,
    compile_nodes,
)
from onnxcomp.methods.distill.blocks import WEIGHTED, Block
from onnxcomp.methods.distill.forms import FULL_QMAX, REDUCED_QMAX, Forms

# Share of codes within 1.5 steps of the original over the scale: GPTQ moves a few
# further, a wrong tensor or layout agrees nowhere near this.
AGREEMENT = 0.9
CODE_DTYPES = {ir.DataType.INT8: (-FULL_QMAX, FULL_QMAX), ir.DataType.INT4: (-8, 7)}


def original_weights(teacher: ir.Model, output: str, depth: int = 6) -> list[np.ndarray]:
    """The constant weights of the original's weighted nodes a few steps before
    ``output`` (nearest first)."""
    producers = {v.name: n for n in teacher.graph for v in n.outputs}
    found: list[np.ndarray] = []
    frontier: list[ir.Node | None] = [producers.get(output)]
    seen: set[ir.Node] = set()
    for _ in range(depth):
        nxt: list[ir.Node | None] = []
        for node in frontier:
            if node is None or node in seen:
                continue
            seen.add(node)
            for v in node.inputs:
                array = const(v)
                if array is not None:
                    if node.op_type in WEIGHTED and array.ndim >= 2:
                        found.append(array)
                elif v is not None and v.name in producers:
                    nxt.append(producers[v.name or ""])
        frontier = nxt
    return found


def _constants(program: Compiled, fixed: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Every value of the block computable from its initializers."""
    env: dict[str, Any] = dict(fixed)
    with torch.no_grad():
        for fn, ins, outs in program:
            if all(not n or n in env for n in ins):
                values = fn([env[n] if n else None for n in ins])
                env.update((n, v) for n, v in zip(outs, values, strict=False) if n)
    return env


Step = tuple[np.ndarray | None, ir.Value | None]


def _step(value: ir.Value, env: dict[str, Any], codes: np.ndarray, inside: set[ir.Node]) -> Step:
    """The per-element scale of code leaf ``value``, laid out as its codes (None when
    it has another form), and the value it is read from."""
    use = next(iter(value.uses()))
    node = use.node
    if node.op_type == "DequantizeLinear" and use.idx == 0:
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            zero = env.get(node.inputs[2].name or "")
            if zero is None or bool(torch.any(zero != 0)):
                return None, None
        scale_value = node.inputs[1]
        scale = env[scale_value.name or ""].float().numpy()  # type: ignore[union-attr]
        axis = node.attributes.get_int("axis", 1) % codes.ndim
        block = node.attributes.get_int("block_size", 0)
        if block:
            step = np.repeat(scale, block, axis=axis).take(range(codes.shape[axis]), axis=axis)
            return step, scale_value
        shape = [1] * codes.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        return np.broadcast_to(scale.reshape(shape), codes.shape), scale_value
    if node.op_type == "Cast":
        mul = next(iter(node.outputs[0].uses())).node
        if mul.op_type != "Mul":
            return None, None
        other = mul.inputs[1] if mul.inputs[0] is node.outputs[0] else mul.inputs[0]
        return _scaled(other, env, codes.shape)
    if node.op_type == "MatMulInteger" and use.idx == 1:
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            zero = env.get(node.inputs[3].name or "")
            if zero is None or bool(torch.any(zero != 0)):
                return None, None
        act = node.inputs[0].producer() if node.inputs[0] is not None else None
        if act is None or act.op_type != "DynamicQuantizeLinear":
            return None, None
        for act_use in act.outputs[1].uses():  # the weight's scale times the input's
            if act_use.node.op_type == "Mul" and act_use.node in inside:
                return _scaled(act_use.node.inputs[1 - act_use.idx], env, codes.shape)
    return None, None


def _scaled(value: ir.Value | None, env: dict[str, Any], shape: tuple[int, ...]) -> Step:
    if value is None or value.name not in env:
        return None, None
    try:
        return np.broadcast_to(env[value.name].float().numpy(), shape), value
    except ValueError:
        return None, None


def _match(codes: np.ndarray, step: np.ndarray, weights: list[np.ndarray]) -> np.ndarray | None:
    """The original weight (or its transpose) that rounds to ``codes`` at ``step``."""
    q = codes.astype(np.float64)
    live = codes != 0
    for w in weights:
        for cand in (w, w.T if w.ndim == 2 else None):
            if cand is None or cand.shape != codes.shape:
                continue
            x = cand / np.where(step == 0, 1.0, step)
            near = np.abs(x - q) <= 1.5
            if live.any() and near[live].mean() >= AGREEMENT:
                return np.asarray(cand, np.float32)
    return None


def build_params(
    graph: ir.Graph, block: Block, forms: Forms, originals: list[np.ndarray], *,
    keep_zeros: bool, reduced: bool, opsets: dict[str, int] | None = None,
) -> tuple[BlockParams, BlockParams, list[str]]:  # fmt: skip
    """(the trained block, the block as stored, the code leaves left as stored)."""
    int8, books, floats = forms
    leaves = set(block.leaves)
    fixed: dict[str, torch.Tensor] = {}
    for node in block.nodes:
        for v in node.inputs:
            if v is not None and v.name in graph.initializers and v.const_value is not None:
                fixed[v.name or ""] = _tensor(v.const_value.numpy())
    program = compile_nodes(block.nodes, opsets or dict(graph.opset_imports))
    env = _constants(program, fixed)
    code_list: list[Codes] = []
    left: list[str] = []
    scales = {f.scale for f in int8} | {f.scale for f in forms.int4}
    for name in sorted(leaves):
        value = graph.initializers[name]
        dtype = value.const_value.dtype if value.const_value is not None else None
        if dtype not in CODE_DTYPES:
            continue
        codes = _tensor(value.const_value.numpy()).numpy()  # type: ignore[union-attr]
        step, scale_value = _step(value, env, codes, set(block.nodes))
        w = _match(codes, step, originals) if step is not None else None
        if step is None or w is None:
            left.append(name)
            continue
        lo, hi = CODE_DTYPES[dtype]
        if dtype == ir.DataType.INT8 and reduced:
            top = int(np.abs(codes.astype(np.int32)).max()) if codes.size else 0
            lo, hi = (-REDUCED_QMAX, REDUCED_QMAX) if top <= REDUCED_QMAX else (lo, hi)
        stored_dtype = ml_dtypes.int4 if dtype == ir.DataType.INT4 else np.int8
        code_list.append(adaround_codes(name, codes.astype(np.int32), w, step, lo, hi, keep_zeros))
        code_list[-1].dtype = stored_dtype
        scales.add(_source(scale_value))
    book_list = [_book(graph, b, keep_zeros) for b in books if {b.table, b.codes} <= leaves]
    float_list = []
    for f in floats:
        if f.name in leaves and f.name not in scales:
            w = graph.initializers[f.name].const_value.numpy().astype(np.float32)  # type: ignore[union-attr]
            mask = torch.from_numpy((w != 0).astype(np.float32)) if keep_zeros else None
            float_list.append(Float(f.name, f.half, torch.nn.Parameter(torch.from_numpy(w)), mask))
    trained = BlockParams(block, program, fixed, code_list, book_list, float_list)
    return trained, BlockParams(block, program, fixed, [], [], []), left


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A torch tensor of a stored array (4-bit codes widened to 8 bits)."""
    if array.dtype == ml_dtypes.int4:
        array = array.astype(np.int8)
    elif array.dtype == ml_dtypes.uint4:
        array = array.astype(np.uint8)
    return torch.from_numpy(np.array(array))


def _source(value: ir.Value | None) -> str:
    """The initializer a scale is read from (through a float16 Cast)."""
    producer = value.producer() if value is not None else None
    if producer is not None and producer.op_type == "Cast" and producer.inputs[0] is not None:
        return producer.inputs[0].name or ""
    return value.name or "" if value is not None else ""


def _book(graph: ir.Graph, form: Any, keep_zeros: bool) -> Book:
    values = graph.initializers[form.table].const_value.numpy().astype(np.float32)  # type: ignore[union-attr]
    codes = graph.initializers[form.codes].const_value.numpy().astype(np.int64)  # type: ignore[union-attr]
    zero = (values == 0) if keep_zeros else np.zeros(values.shape, bool)
    return Book(
        form.table, form.codes, form.decoded,
        torch.nn.Parameter(torch.from_numpy(values.copy())),
        torch.nn.Parameter(torch.from_numpy(values[codes])),
        torch.from_numpy(codes), torch.from_numpy((~zero).astype(np.float32)),
        torch.from_numpy(zero[codes]),
    )  # fmt: skip
