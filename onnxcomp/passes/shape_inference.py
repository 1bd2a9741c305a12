"""onnx shape inference that also works on models with map-typed outputs.

onnx_ir's ShapeInferencePass reads the inferred protobuf back with onnx_ir, which
rejects map types (scikit-learn's ZipMap output). Here those types are cut from the
inferred protobuf first (``opaque_types``), then types and shapes are copied by name.
"""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxcomp import opaque_types

logger = logging.getLogger(__name__)


class InferShapesPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not opaque_types.has_opaque(model):
            return ShapeInferencePass()(model)
        try:
            proto = onnx.shape_inference.infer_shapes(
                opaque_types.to_proto(model), check_type=True, strict_mode=True, data_prop=True
            )
        except Exception as exc:
            logger.warning("shape inference failed, model left unchanged: %s", exc)
            return ir.passes.PassResult(model, modified=False)
        opaque_types.strip(proto)
        inferred = ir.from_proto(proto)
        modified = False
        for graph, other in zip(model.graphs(), inferred.graphs(), strict=False):
            mine = ir.convenience.create_value_mapping(graph)
            theirs = ir.convenience.create_value_mapping(other)
            for name, value in mine.items():
                found = theirs.get(name)
                if found is None:
                    continue
                if found.shape is not None and value.shape != found.shape:
                    value.shape, modified = found.shape, True
                if found.dtype is not None and value.dtype != found.dtype:
                    value.dtype, modified = found.dtype, True
        return ir.passes.PassResult(model, modified=modified)
