"""Which of this machine's onnxruntime int8 kernels saturate on full-range weights.

On x86 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with
VPMADDUBSW, which adds two neighbouring products into a saturating int16: 255 * 127 * 2
overflows it, and such a layer silently computes a wrong sum. Weights kept within
[-63, 63] (7 bits) cannot overflow it (255 * 63 * 2 < 32768). Which kernel runs is
onnxruntime's choice per op, shape and machine, so the question is asked of onnxruntime
itself: one Q/DQ MatMul, Gemm and Conv each, fused as in our files, whose exact answer
does not fit an int16 pair. When any of them saturates, all three get 7-bit weights:
onnxruntime picks its Conv kernel by shape (its 1 x 1 symmetric kernel is exact here, a
3 x 3 Conv over 3 channels goes through the saturating GEMM), so no probe can clear one.
"""

from __future__ import annotations

import functools

import numpy as np

from onnxcomp.errors import OnnxcompError

WEIGHT_RANGES = ("auto", "full", "reduced")
FULL_BITS, REDUCED_BITS = 8, 7
PROBED_OPS = ("MatMul", "Gemm", "Conv")
_K = 64  # reduction length of a probe: its exact sum, 255 * 127 * 64, fits float32 exactly


def _probe_model(op: str) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    if op == "Conv":
        x_shape, w = [1, _K, 1, 1], np.full((4, _K, 1, 1), 127, np.int8)
    elif op == "Gemm":
        x_shape, w = [1, _K], np.full((4, _K), 127, np.int8)
    else:
        x_shape, w = [1, _K], np.full((_K, 4), 127, np.int8)
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    zero_u8 = numpy_helper.from_array(np.array(0, np.uint8), "zu")
    zero_s8 = numpy_helper.from_array(np.array(0, np.int8), "zs")
    layer = helper.make_node(op, ["xd", "wd"], ["y"])
    if op == "Gemm":
        layer.attribute.append(helper.make_attribute("transB", 1))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "one", "zu"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "one", "zu"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "one", "zs"], ["wd"]),
        layer,
    ]
    graph = helper.make_graph(
        nodes,
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), one, zero_u8, zero_s8],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@functools.cache
def saturating_ops() -> frozenset[str]:
    """The int8 op types to give 7-bit weights on this machine: all or none."""
    from onnxcomp.runtime.session import make_session

    for op in PROBED_OPS:
        session = make_session(_probe_model(op), threads=1, optimize=True)
        shape = [1, _K, 1, 1] if op == "Conv" else [1, _K]
        (y,) = session.run(None, {"x": np.full(shape, 255.0, np.float32)})
        if np.any(y != 255 * 127 * _K):
            return frozenset(PROBED_OPS)
    return frozenset()


def resolve_weight_bits(requested: str, activation_type: str) -> tuple[frozenset[str], str]:
    """Op types whose weights get 7 bits (the rest keep 8), and why."""
    if requested not in WEIGHT_RANGES:
        raise OnnxcompError(
            f"--weight-range must be one of {', '.join(WEIGHT_RANGES)}, got {requested!r}"
        )
    if requested == "full":
        return frozenset(), "requested"
    if requested == "reduced":
        return frozenset(PROBED_OPS), "requested"
    if activation_type != "uint8":
        return frozenset(), f"{activation_type} activations: no uint8 x int8 kernel"
    ops = saturating_ops()
    if ops:
        return ops, (
            "this CPU's uint8 x int8 kernels saturate on full-range weights (x86 without "
            "VNNI): weights in [-63, 63]"
        )
    return ops, "this CPU's uint8 x int8 kernels do not saturate"


def bits_for(op_types: list[str], reduced: frozenset[str]) -> int:
    """7 when any reader of a weight runs a saturating kernel, else 8."""
    return REDUCED_BITS if reduced.intersection(op_types) else FULL_BITS
