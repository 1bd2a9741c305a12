"""Small graph edits every rewriting pass needs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as an initializer of ``graph``, typed and shaped from the array."""
    dtype = ir.DataType.from_numpy(array.dtype)
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(dtype),
        # ir.Tensor, not ir.tensor: the array is already numpy, and ir.tensor's checks cost
        # 10x as much (thousands of scales and zero points per int8 measure-step candidate).
        const_value=ir.Tensor(array, dtype=dtype, name=name),
    )
    graph.register_initializer(value)
    return value
