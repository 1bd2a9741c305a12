"""onnxcomp: make exported ONNX models smaller and faster, and prove they still work."""

from onnxcomp.check import CheckResult, check
from onnxcomp.errors import BudgetExceeded, OnnxcompError
from onnxcomp.inspect_model import InspectResult, inspect
from onnxcomp.io.model_io import load, save
from onnxcomp.pipeline.compress import CompressOptions, CompressResult, compress, compress_model

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
