"""One file per transformation, each an onnx_ir pass with one job."""
