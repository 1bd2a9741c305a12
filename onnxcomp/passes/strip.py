"""Strip what pruning made useless: zero bias adds, zero Conv/Gemm biases, dead tensors.

An Add or Sub of an all-zero constant is bypassed only when the constant cannot change
the result's shape by broadcasting; a zero bias input of Conv or Gemm is dropped. The
now-unused nodes and initializers go with onnx_ir's own dead-code pass.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxcomp.passes.shape_inference import InferShapesPass

if TYPE_CHECKING:
    from onnxcomp.passes.report import CompressReport

logger = logging.getLogger(__name__)


def _zero_constant(value: ir.Value | None) -> bool:
    if value is None or not value.is_initializer() or value.is_graph_input():
        return False
    tensor = value.const_value
    if tensor is None or tensor.dtype not in (
        ir.DataType.FLOAT,
        ir.DataType.FLOAT16,
        ir.DataType.DOUBLE,
        ir.DataType.BFLOAT16,
    ):
        return False
    return not np.any(tensor.numpy())


def _broadcast_is_noop(data: ir.Value, zero: ir.Value) -> bool:
    """True when ``data`` op ``zero`` has exactly ``data``'s shape."""
    zshape = zero.const_value.shape if zero.const_value is not None else None
    if zshape is None:
        return False
    zdims = list(zshape.numpy())
    if all(d == 1 for d in zdims) and data.shape is not None and len(zdims) <= len(data.shape):
        return True
    if data.shape is None or len(zdims) > len(data.shape):
        return False
    tail = list(data.shape)[len(data.shape) - len(zdims) :]
    return all(z == 1 or (isinstance(d, int) and d == z) for z, d in zip(zdims, tail, strict=True))


class BypassZeroAddPass(ir.passes.InPlacePass):
    """Add(x, 0), Add(0, x) and Sub(x, 0) become x."""

    def __init__(self, report: CompressReport | None = None) -> None:
        super().__init__()
        self.bypassed: list[str] = []
        self.report = report

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.bypassed = []
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.op_type not in ("Add", "Sub") or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.inputs) != 2 or node.outputs[0].is_graph_output():
                continue
            a, b = node.inputs
            candidates = [(a, b)] if node.op_type == "Sub" else [(a, b), (b, a)]
            for data, zero in candidates:
                if data is None or zero is None or not _zero_constant(zero):
                    continue
                if not _broadcast_is_noop(data, zero):
                    continue
                if data.dtype != node.outputs[0].dtype and node.outputs[0].dtype is not None:
                    continue
                node.outputs[0].replace_all_uses_with(data)
                assert node.graph is not None
                node.graph.remove(node, safe=True)
                self.bypassed.append(node.name or node.op_type)
                break
        if self.bypassed:
            logger.info("bypassed %d additions of zero", len(self.bypassed))
        if self.report is not None:
            self.report.stripped += [f"bypassed zero add {n}" for n in self.bypassed]
        return ir.passes.PassResult(model, modified=bool(self.bypassed))


class DropZeroBiasPass(ir.passes.InPlacePass):
    """An all-zero bias of Conv, ConvTranspose or Gemm is the same as no bias."""

    def __init__(self, report: CompressReport | None = None) -> None:
        super().__init__()
        self.dropped: list[str] = []
        self.report = report

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.dropped = []
        gemm_optional_c = model.opset_imports.get("", 1) >= 11
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.domain not in ("", "ai.onnx") or len(node.inputs) != 3:
                continue
            if node.op_type == "Gemm" and not gemm_optional_c:
                continue
            if node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
                continue
            bias = node.inputs[2]
            if bias is None or not _zero_constant(bias):
                continue
            if node.op_type == "Gemm" and not _gemm_bias_is_full_or_row(node, bias):
                continue
            self.dropped.append(bias.name or "")
            node.resize_inputs(2)
        if self.dropped:
            logger.info("dropped %d all-zero biases", len(self.dropped))
        if self.report is not None:
            self.report.stripped += [f"dropped zero bias {n}" for n in self.dropped]
        return ir.passes.PassResult(model, modified=bool(self.dropped))


def _gemm_bias_is_full_or_row(node: ir.Node, bias: ir.Value) -> bool:
    """Dropping C must not change Gemm's output shape; C broadcasts to (M, N) only."""
    return bias.const_value is not None and len(bias.const_value.shape) <= 2


class RemoveUnusedSubgraphInitializersPass(ir.passes.InPlacePass):
    """onnx_ir's dead-code pass clears the main graph's initializers, not subgraphs'."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for graph in model.graph.subgraphs():
            outputs = set(graph.outputs)
            for init in list(graph.initializers.values()):
                if not init.uses() and init not in outputs and not init.is_graph_input():
                    del graph.initializers[init.name or ""]
                    count += 1
        return ir.passes.PassResult(model, modified=bool(count))


def strip_pass(report: CompressReport | None = None) -> ir.passes.Sequential:
    return ir.passes.Sequential(
        InferShapesPass(),
        BypassZeroAddPass(report),
        DropZeroBiasPass(report),
        RemoveUnusedNodesPass(),
        RemoveUnusedSubgraphInitializersPass(),
    )
