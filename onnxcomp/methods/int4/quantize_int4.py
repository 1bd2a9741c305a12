"""Block-wise 4-bit MatMul/Gemm weights in the form onnxruntime fuses into MatMulNBits.

``DequantizeLinear(int4|uint4 [K, N], scale [ceil(K/bs), N], axis=0, block_size=bs)``
feeding the B input of one MatMul or Gemm (opset 21) is turned into a 4-bit
MatMulNBits kernel by onnxruntime >= 1.19 at session creation: the file holds half a
byte per weight and inference reads it directly. Whatever int4 cannot serve is left
float here and said in ``skipped`` (the caller stores it int8): Conv and embedding
weights, weights shared by several ops (the fusion wants a single consumer), tiny
layers, and with calibration data the layers whose output int4 hurts most.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnx_ir as ir

from onnxcomp.graph.edit import add_initializer
from onnxcomp.graph.naming import NameAllocator
from onnxcomp.graph.weights import Weight, find_weights
from onnxcomp.numerics.blocks import BlockQuant, max_block_error, quantize_blocks
from onnxcomp.passes.report import QuantRecord

logger = logging.getLogger(__name__)

INT4_MIN_OPSET = 21
FUSED_FROM_ORT = (1, 19)
# Below this many elements a layer's bytes do not matter and its 4-bit error does.
MIN_ELEMENTS = 16384
# With calibration data: a layer whose relative output error ||dW X||^2 / ||W X||^2 at
# 4 bits exceeds this stays int8 (int8 rounding is ~250x below it).
MAX_OUTPUT_ERROR = 0.02


def runtime_fuses_int4() -> tuple[bool, str]:
    """Whether the installed onnxruntime fuses int4 DequantizeLinear + MatMul."""
    import onnxruntime

    version = onnxruntime.__version__
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return parts >= FUSED_FROM_ORT, version


def int4_slot(weight: Weight) -> str | None:
    """Why ``weight`` cannot be a MatMulNBits weight, or None when it can."""
    if len(weight.uses) != 1 or len(list(weight.value.uses())) != 1:
        return f"read by {len(weight.uses)} ops (MatMulNBits wants one): int8"
    use = weight.uses[0]
    node = use.node
    if node.op_type not in ("MatMul", "Gemm") or use.index != 1:
        return f"{node.op_type} weight: int4 serves MatMul/Gemm only, int8"
    shape = weight.value.shape
    if shape is None or len(shape) != 2:
        return f"{len(shape) if shape is not None else '?'}-D MatMul weight: int8"
    if node.op_type == "Gemm" and node.attributes.get_float("alpha", 1.0) != 1.0:
        return "Gemm with alpha != 1: int8"
    const = weight.value.const_value
    size = const.size if const is not None else 0
    if size < MIN_ELEMENTS:
        return f"tiny layer ({size} weights): int8"
    return None


def as_kn(weight: Weight) -> np.ndarray:
    """The weight as MatMul's B [K, N] (a Gemm with transB stores [N, K])."""
    array = weight.array.astype(np.float32)
    node = weight.uses[0].node
    if node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0)):
        return np.ascontiguousarray(array.T)
    return array


class QuantizeInt4Pass(ir.passes.InPlacePass):
    """Float MatMul/Gemm weights -> int4 block DequantizeLinear (RTN, or GPTQ via ``solver``).

    ``solver(weight, w_kn) -> BlockQuant | None`` replaces plain rounding (GPTQ from
    calibration data); ``sensitivity(weight, w_kn, quant) -> float`` is a layer's relative
    output error, above MAX_OUTPUT_ERROR the layer stays for int8.
    """

    def __init__(
        self,
        *,
        block_size: int = 32,
        symmetric: bool = True,
        include: Callable[[Weight], bool] = lambda w: True,
        solver: Callable[[Weight, np.ndarray], BlockQuant | None] | None = None,
        sensitivity: Callable[[Weight, np.ndarray, BlockQuant], float] | None = None,
        keep_int8: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.symmetric = symmetric
        self.include = include
        self.solver = solver
        self.sensitivity = sensitivity
        self.keep_int8 = keep_int8  # judged on the model's outputs (quantization/int4.py)
        self.records: list[QuantRecord] = []
        self.skipped: dict[str, str] = {}
        self.errors: dict[str, float] = {}

    def requires(self, model: ir.Model) -> None:
        opset = model.opset_imports.get("", 1)
        if opset < INT4_MIN_OPSET:
            raise ir.passes.PreconditionError(
                f"int4 blocks need opset >= {INT4_MIN_OPSET}, the model has {opset}"
            )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.records, self.skipped, self.errors = [], {}, {}
        names = NameAllocator(model)
        for weight in find_weights(model):
            if weight.value.dtype != ir.DataType.FLOAT or not self.include(weight):
                continue
            why = int4_slot(weight)
            if why is not None:
                self.skipped[weight.name] = why
                continue
            w = as_kn(weight)
            quant = self.solver(weight, w) if self.solver is not None else None
            if quant is None:
                quant = quantize_blocks(w, self.block_size, symmetric=self.symmetric)
            if self.sensitivity is not None:
                err = self.sensitivity(weight, w, quant)
                self.errors[weight.name] = err
                if weight.name in self.keep_int8:
                    self.skipped[weight.name] = (
                        f"sensitive: with int4 here the model's outputs moved past the "
                        f"tolerance on calibration data (layer error {err:.3g}), int8"
                    )
                    continue
                if err > MAX_OUTPUT_ERROR:
                    self.skipped[weight.name] = (
                        f"sensitive: int4 output error {err:.3g} > {MAX_OUTPUT_ERROR:g} "
                        "on calibration data, int8"
                    )
                    continue
            self._rewrite(weight, w, quant, names)
        if self.records:
            before = sum(r.bytes_before for r in self.records)
            after = sum(r.bytes_after for r in self.records)
            logger.info("int4: %d weights, %d -> %d B", len(self.records), before, after)
        return ir.passes.PassResult(model, modified=bool(self.records))

    def _rewrite(self, weight: Weight, w: np.ndarray, quant: BlockQuant, names) -> None:
        graph, node, base = weight.graph, weight.uses[0].node, weight.name
        # The reader may sit in an If/Loop body using an outer-scope weight: the codes go
        # where it is.
        home = node.graph or graph
        signed = quant.zero is None
        dtype = ml_dtypes.int4 if signed else ml_dtypes.uint4
        q_value = add_initializer(home, names.new(f"{base}_int4"), quant.q.astype(dtype))
        s_value = add_initializer(home, names.new(f"{base}_scale"), quant.scale)
        inputs = [q_value, s_value]
        if quant.zero is not None:
            zero = quant.zero.astype(ml_dtypes.uint4)
            inputs.append(add_initializer(home, names.new(f"{base}_zero_point"), zero))
        dq = ir.node(
            "DequantizeLinear",
            inputs,
            attributes={"axis": 0, "block_size": quant.block_size},
            name=names.new(f"{base}_DequantizeLinear"),
        )
        out = dq.outputs[0]
        out.name = names.new(f"{base}_dequantized")
        out.dtype = ir.DataType.FLOAT
        out.shape = ir.Shape(w.shape)
        home.insert_before(node, dq)
        if node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0)):
            node.attributes["transB"] = ir.AttrInt64("transB", 0)
        node.replace_input_with(1, out)
        if graph.initializers.get(base) is weight.value and not weight.value.uses():
            del graph.initializers[base]
        stored = quant.q.size // 2 + quant.q.size % 2 + quant.scale.nbytes
        if quant.zero is not None:
            stored += -(-quant.zero.size // 2)
        self.records.append(
            QuantRecord(
                base,
                weight.op_types,
                tuple(weight.array.shape),
                0,
                weight.array.nbytes,
                stored,
                max_block_error(w, quant),
                bits=4,
                relative_error=_relative(w, quant),
            )
        )


def _relative(w: np.ndarray, quant: BlockQuant) -> float:
    norm = float(np.linalg.norm(w))
    return float(np.linalg.norm(quant.dequantize() - w)) / norm if norm else 0.0
