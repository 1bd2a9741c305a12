"""Make weights visible: fold constant subgraphs, lift Constant nodes to initializers,
fold BatchNormalization into the Conv/ConvTranspose/Gemm before it, and a per-channel
bias Add into the Conv before it.

Weights computed at run time from constants (a Transpose of an initializer, a Constant
node inside an If branch) look like activations to every later pass until this runs.
A BatchNormalization left after a Conv keeps four float vectors per channel and, worse,
hides the Conv's real weights from pruning and quantization.
"""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveUnusedNodesPass
from onnxscript.optimizer import fold_constants_ir
from onnxscript.rewriter import RewritePass
from onnxscript.rewriter.rules.common import (
    fuse_batchnorm_into_conv_rule,
    fuse_batchnorm_into_conv_transpose_rule,
    fuse_batchnorm_into_gemm_rule,
)

from onnxcomp.passes.fold_conv_bias import FoldConvBiasAddPass
from onnxcomp.passes.strip import RemoveUnusedSubgraphInitializersPass

logger = logging.getLogger(__name__)

# Weights are big; onnxscript's defaults (8k elements) would leave them unfolded.
FOLD_SIZE_LIMIT = 1 << 24
# Folding an op whose big constant input has other readers stores the tensor twice
# (an LSTM weight both Unsqueezed and Sliced: silero-vad grew 9%). Below this many
# elements a copy costs nothing worth keeping the op for.
SHARED_COPY_LIMIT = 1024


def _no_second_copy(node: ir.Node) -> bool | None:
    """Refuse to fold a node when that would duplicate a big, shared constant."""
    for value in node.inputs:
        if value is None:
            continue
        tensor = value.const_value
        if tensor is not None and tensor.size > SHARED_COPY_LIMIT and len(value.uses()) > 1:
            return False
    return None  # onnxscript's own rules decide


class FoldConstantsPass(ir.passes.InPlacePass):
    """onnxscript's constant folding with weight-sized limits and no duplicated weights."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = fold_constants_ir(
            model,
            onnx_shape_inference=False,
            input_size_limit=FOLD_SIZE_LIMIT,
            output_size_limit=FOLD_SIZE_LIMIT,
            should_fold=_no_second_copy,
        )
        return ir.passes.PassResult(model, modified=result.modified)


class FoldBatchNormPass(ir.passes.InPlacePass):
    """BatchNormalization after Conv/ConvTranspose/Gemm folded into their weights and bias
    (onnxscript's rewrite rules, which check that the weights are unshared constants)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _count(model, "BatchNormalization")
        if not before:
            return ir.passes.PassResult(model, modified=False)
        rules = [
            fuse_batchnorm_into_conv_rule,
            fuse_batchnorm_into_conv_transpose_rule,
            fuse_batchnorm_into_gemm_rule,
        ]
        RewritePass(rules)(model)
        RemoveUnusedNodesPass()(model)
        folded = before - _count(model, "BatchNormalization")
        if folded:
            logger.info("folded %d BatchNormalization into the op before them", folded)
        return ir.passes.PassResult(model, modified=folded > 0)


def _count(model: ir.Model, op_type: str) -> int:
    graphs = [model.graph, *model.graph.subgraphs()]
    return sum(1 for g in graphs for n in g if n.op_type == op_type and n.domain == "")


def prepare_pass() -> ir.passes.Sequential:
    return ir.passes.Sequential(
        FoldConstantsPass(),
        # Every tensor: onnxscript's BatchNorm rules need initializers, and a 8-channel
        # BN (PaddleOCR's first conv) has 8-element vectors.
        LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        FoldBatchNormPass(),
        FoldConvBiasAddPass(),
        # What folding left unread (a weight now stored Unsqueezed) must not be saved.
        RemoveUnusedNodesPass(),
        RemoveUnusedSubgraphInitializersPass(),
    )
