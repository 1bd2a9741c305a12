"""The ONNX ops as torch functions, one module per family (math, nn, shape, rnn, quant).

names.py holds the op names alone (no torch) so a graph can be refused before torch is
imported; program.py compiles a graph once into a list of closures (attributes read at
compile time, constant chains folded) and runs it.
"""
