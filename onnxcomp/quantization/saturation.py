"""Whether this machine's onnxruntime int8 kernels saturate on full-range weights.

On x86 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with
VPMADDUBSW, which adds two neighbouring products into a saturating int16: 255 * 127 * 2
overflows it, and such a layer silently computes the wrong sum. Weights kept within
[-63, 63] (7 bits) cannot overflow it (255 * 63 * 2 < 32768). Which kernel runs is
onnxruntime's choice at load time, so the question is asked of onnxruntime itself: one
MatMulInteger whose exact answer does not fit an int16 pair.
"""

from __future__ import annotations

import functools

import numpy as np

from onnxcomp.errors import OnnxcompError

WEIGHT_RANGES = ("auto", "full", "reduced")
FULL_BITS, REDUCED_BITS = 8, 7


@functools.cache
def u8s8_saturates() -> bool:
    """True when onnxruntime's uint8 x int8 integer GEMM loses the exact sum here."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxcomp.runtime.session import make_session

    k = 64
    weights = numpy_helper.from_array(np.full((k, 4), 127, np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = make_session(model.SerializeToString(), threads=1, optimize=False)
    (y,) = session.run(None, {"a": np.full((1, k), 255, np.uint8)})
    return bool(np.any(y != 255 * 127 * k))


def resolve_weight_bits(requested: str, activation_type: str) -> tuple[int, str]:
    """Bits of the int8 weights that int8 kernels read, and why."""
    if requested not in WEIGHT_RANGES:
        raise OnnxcompError(
            f"--weight-range must be one of {', '.join(WEIGHT_RANGES)}, got {requested!r}"
        )
    if requested == "full":
        return FULL_BITS, "requested"
    if requested == "reduced":
        return REDUCED_BITS, "requested"
    if activation_type != "uint8":
        return FULL_BITS, f"{activation_type} activations: no uint8 x int8 kernel"
    if u8s8_saturates():
        return REDUCED_BITS, (
            "this CPU's uint8 x int8 kernels saturate on full-range weights (x86 without "
            "VNNI): weights in [-63, 63]"
        )
    return FULL_BITS, "this CPU's uint8 x int8 kernels do not saturate"
