"""int8 quantization: the parts that are not graph rewrites.

- ``flow.py``: the full-int8 flow (calibrate once, place Q/DQ, measure, keep float what
  does not pay), run by the pipeline's activations step.
- ``placement.py``: where Q/DQ pairs go (an analysis of the graph; ``passes/`` inserts them).
- ``calibrate.py``: streamed activation statistics in one onnxruntime pass;
  ``histogram.py``: the mergeable histograms behind percentile/entropy/mse.
- ``numeric.py``: the numpy arithmetic: scales, zero points, rounding, ranges.
"""
