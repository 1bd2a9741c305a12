"""Magnitude pruning (magnitude.py); SparseGPT is recover/'s data-aware variant."""
