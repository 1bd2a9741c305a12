"""One folder per compression method, each holding its passes, its flow and what data it
needs: prune/ (magnitude), channels/ (structured channels and heads), weights/ (int8 weight
storage), int8/ (activations: calibrate, place Q/DQ, measure), int4/ (4-bit blocks, AWQ),
codebook/ (k-means codebooks, packed codes), recover/ (GPTQ, SparseGPT, bias correction).

A method imports ``numerics``, ``graph``, ``io``, ``runtime``, ``passes`` and the methods it
builds on (int4, int8, codebook and recover write int8 weights through ``weights``;
codebook and channels read layers through ``recover``), never ``pipeline`` or above. The
calibration data reaches a method as one opened ``DataSource`` from the pipeline."""
