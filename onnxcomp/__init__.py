"""onnxcomp: make exported ONNX models smaller and faster, and prove they still work."""

from onnxcomp.compress import CompressOptions, CompressResult, compress, compress_model
from onnxcomp.errors import BudgetExceeded, OnnxcompError
from onnxcomp.model import load, save

__all__ = [
    "BudgetExceeded",
    "CompressOptions",
    "CompressResult",
    "OnnxcompError",
    "compress",
    "compress_model",
    "load",
    "save",
]
__version__ = "0.1.0"
