"""Make weights visible: fold constant subgraphs and lift Constant nodes to initializers.

Weights computed at run time from constants (a Transpose of an initializer, a Constant
node inside an If branch) look like activations to every later pass until this runs.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass
from onnxscript.optimizer._constant_folding import FoldConstantsPass

# Weights are big; onnxscript's defaults (8k elements) would leave them unfolded.
FOLD_SIZE_LIMIT = 1 << 24


def prepare_pass() -> ir.passes.Sequential:
    return ir.passes.Sequential(
        FoldConstantsPass(
            shape_inference=False,
            input_size_limit=FOLD_SIZE_LIMIT,
            output_size_limit=FOLD_SIZE_LIMIT,
        ),
        LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=16),
    )
