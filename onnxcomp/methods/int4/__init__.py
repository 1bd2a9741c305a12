"""4-bit MatMul/Gemm blocks and embedding rows: flow.py (GPTQ from calibration data,
sensitivity, fusion check), quantize_int4.py and gather_int4.py (the graph rewrites), awq.py
(activation-aware scales)."""
