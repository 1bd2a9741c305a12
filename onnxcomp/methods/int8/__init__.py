"""Full int8 (weights and activations): flow.py runs it (calibrate.py: streamed statistics;
placement.py: where Q/DQ go; quantize_activations.py inserts them; measure_step.py keeps float
what does not pay; dynamic_matmul.py, layernorm_guard.py: kernel-driven rewrites), with
smoothquant.py before calibration."""
