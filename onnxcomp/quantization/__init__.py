"""int8 and int4 quantization: the parts that are not graph rewrites.

- ``flow.py``: the full-int8 flow (calibrate once, place Q/DQ, measure, keep float what
  does not pay), run by the pipeline's activations step.
- ``placement.py``: where Q/DQ pairs go (an analysis of the graph; ``passes/`` inserts them).
- ``calibrate.py``: streamed activation statistics in one onnxruntime pass;
  ``histogram.py``: the mergeable histograms behind percentile/entropy/mse.
- ``numeric.py``: the numpy arithmetic: scales, zero points, rounding, ranges.
- ``int4.py``: the int4 flow (4-bit MatMul/Gemm blocks, GPTQ from calibration data, the
  layers int4 hurts most left for int8, onnxruntime's fusion checked);
  ``blocks.py``: the block-wise 4-bit arithmetic.
"""
