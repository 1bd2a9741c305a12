"""Pure numpy arithmetic, the floor everything stands on: scales and rounding (scales.py),
4-bit blocks (blocks.py), mergeable histograms (histogram.py), layer Hessians (hessian.py),
the optimal-brain-surgeon sweep (obs.py) behind GPTQ (gptq.py, gptq_blocks.py) and
SparseGPT (sparsegpt.py), bias correction (bias_correction.py), k-means codebooks
(codebook.py). Nothing here imports onnx, onnx_ir, onnxruntime or another onnxcomp module
outside this folder: each function is testable on arrays alone."""
