"""onnxcomp: make exported ONNX models smaller and faster, and prove they still work."""

from onnxcomp.check import CheckResult, check
from onnxcomp.compress import CompressOptions, CompressResult, compress, compress_model
from onnxcomp.errors import BudgetExceeded, OnnxcompError
from onnxcomp.inspect_model import InspectResult, inspect
from onnxcomp.model_io import load, save

__all__ = [
    "BudgetExceeded",
    "CheckResult",
    "CompressOptions",
    "CompressResult",
    "InspectResult",
    "OnnxcompError",
    "check",
    "compress",
    "compress_model",
    "inspect",
    "load",
    "save",
]
__version__ = "0.1.0"
