"""From options to an output file: build.py (the PassManager and its step passes),
layers.py (per-layer settings), codebook_step.py (the codebook step), compress.py (the
compress job: load, run, validate, save)."""
