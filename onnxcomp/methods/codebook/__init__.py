"""Codebook weights (``--quantize codebook``): quantize_codebook.py (k-means from
numerics/codebook.py, GPTQ codes) and pack.py (packed code storage)."""
