"""Teacher-guided accuracy recovery: the compressed model is rebuilt to match the original.

Three methods, all from calibration data alone (no labels, no training loop):

- ``bias``: each compressed layer's mean output shift is folded into its bias.
- ``gptq``: weights are rounded column by column, later columns absorbing the error, so
  the layer's *output* on real inputs moves least (instead of the weights).
- ``sparsegpt``: the same for pruning: which weights to drop, and how to fix the rest.

Layout: pure numpy math (obs.py, gptq.py, sparsegpt.py, bias_correction.py, hessian.py),
the layers it understands (layers.py), the sequential drivers over onnxruntime
(driver.py, bias_fold.py) and the passes compress_model uses (passes.py).
"""

from onnxcomp.methods.recover.driver import RecoverRecord
from onnxcomp.methods.recover.passes import BiasCorrectionPass, GPTQPass, Recovery, SparseGPTPass

__all__ = ["BiasCorrectionPass", "GPTQPass", "RecoverRecord", "Recovery", "SparseGPTPass"]
