"""Is a contender's file a valid model? onnx.checker and an onnxruntime CPU session.

A file onnxruntime runs can still be one onnx.checker rejects (an unsorted graph, a wrong
opset for an op): other runtimes and tools refuse it, so the tables show both.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.worker import one_line


def validity(path: Path) -> str:
    """'ok', or the first error line of each check that failed (``checker: ...;
    onnxruntime: ...``)."""
    import onnx
    import onnxruntime as ort

    errors = []
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        errors.append("checker: " + one_line(exc))
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        errors.append("onnxruntime: " + one_line(exc))
    return "; ".join(errors) or "ok"
