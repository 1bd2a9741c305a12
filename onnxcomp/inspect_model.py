"""What is in a model: interface, ops, parameters, sparsity, quantization, external data."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.storage_forms import StoredWeight, storage_forms
from onnxcomp.io import model_io
from onnxcomp.methods.channels.removed import removed_channels

# Which inputs of each integer op hold quantized data (not scales or zero points).
QUANT_DATA_INPUTS = {
    "DequantizeLinear": (0,),
    "QLinearConv": (0, 3),
    "QLinearMatMul": (0, 3),
    "MatMulInteger": (0, 1),
    "ConvInteger": (0, 1),
    "Gather": (0,),  # an int8 embedding table read row by row (gather_dequantize.py)
    "Cast": (0,),  # int8 decoded once at load (methods/weights/decode_at_load.py)
}


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str | None]


@dataclass
class InspectResult:
    path: str
    file_bytes: int
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_types: dict[str, int]
    nodes: int
    subgraphs: int
    parameters: int
    parameter_bytes: dict[str, int]
    zero_fraction: float
    quantized_tensors: list[str] = field(default_factory=list)
    external_data: list[str] = field(default_factory=list)
    metadata_keys: list[str] = field(default_factory=list)
    storage: list[StoredWeight] = field(default_factory=list)  # each weight's stored form
    # Layers --prune-channels shrank (from the file's metadata): name -> [before, after].
    removed_channels: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _info(value: ir.Value) -> TensorInfo:
    shape: list[int | str | None] = []
    if value.shape is not None:
        shape = [d if isinstance(d, int) else d.value for d in value.shape]
    dtype = value.dtype.name.lower() if value.dtype is not None else "unknown"
    return TensorInfo(value.name or "", dtype, shape)


def inspect(path: str | os.PathLike) -> InspectResult:
    model = model_io.load(path)
    graphs = [model.graph, *model.graph.subgraphs()]
    ops: Counter[str] = Counter()
    nodes = 0
    for graph in graphs:
        for node in graph:
            key = (
                node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            )
            ops[key] += 1
            nodes += 1
    by_dtype: Counter[str] = Counter()
    params, zeros, numeric = 0, 0, 0
    external: set[str] = set()
    for tensor in _constant_tensors(graphs):
        params += tensor.size
        by_dtype[tensor.dtype.name.lower()] += tensor.nbytes
        if isinstance(tensor, ir.ExternalTensor):
            external.add(str(tensor.location))
        numeric_type = tensor.dtype.is_floating_point() or tensor.dtype.is_integer()
        if numeric_type and tensor.size >= 16:
            arr = tensor.numpy()
            zeros += int(np.count_nonzero(arr == 0))
            numeric += arr.size
    return InspectResult(
        path=str(path),
        file_bytes=model_io.file_size(path),
        ir_version=model.ir_version,
        producer=" ".join(x for x in (model.producer_name, model.producer_version) if x),
        opsets=dict(sorted(model.opset_imports.items())),
        inputs=[_info(v) for v in model.graph.inputs if not v.is_initializer()],
        outputs=[_info(v) for v in model.graph.outputs],
        op_types=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        nodes=nodes,
        subgraphs=len(graphs) - 1,
        parameters=params,
        parameter_bytes=dict(sorted(by_dtype.items())),
        zero_fraction=zeros / numeric if numeric else 0.0,
        quantized_tensors=_quantized(graphs),
        external_data=sorted(external),
        metadata_keys=sorted(model.metadata_props),
        storage=storage_forms(model),
        removed_channels=removed_channels(model),
    )


def _constant_tensors(graphs: list[ir.Graph]) -> Iterator[ir.TensorProtocol]:
    """Every stored tensor: initializers and the values of Constant nodes (exporters put
    weights there, often inside If/Loop bodies)."""
    for graph in graphs:
        for value in graph.initializers.values():
            if value.const_value is not None:
                yield value.const_value
        for node in graph:
            if node.op_type == "Constant" and node.domain == "":
                attr = node.attributes.get("value")
                if attr is not None and attr.type == ir.AttributeType.TENSOR:
                    yield attr.as_tensor()


def _quantized(graphs: list[ir.Graph]) -> list[str]:
    """Integer initializers that a dequantizing or integer op reads."""
    names = []
    for graph in graphs:
        for node in graph:
            for index in QUANT_DATA_INPUTS.get(node.op_type, ()):
                value = node.inputs[index] if index < len(node.inputs) else None
                tensor = value.const_value if value is not None else None
                int8 = tensor is not None and tensor.dtype in (ir.DataType.INT8, ir.DataType.UINT8)
                if node.op_type == "Gather" and not int8:
                    continue
                if tensor is not None and tensor.dtype.is_integer() and tensor.size > 1:
                    assert value is not None
                    names.append(value.name or "")
    return sorted(set(names))
