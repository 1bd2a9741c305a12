"""int8 weights (quantize_weights.py) and how they are stored: gathered before dequantize,
decoded at load, packed, float16 vectors, BatchNorm vectors, the MatMulNBits Gemm layout, and
the kernel weight range (saturation.py)."""
