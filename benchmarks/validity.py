"""Is a contender's file a valid model? onnx.checker and an onnxruntime CPU session.

A file onnxruntime runs can still be one onnx.checker rejects (an unsorted graph, a wrong
opset for an op): other runtimes and tools refuse it, so the tables show both.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.worker import one_line


def _shape(value: object) -> object:
    """An output's shape; a sequence output (ZipMap's list of maps) by its length."""
    shape = getattr(value, "shape", None)
    return shape if shape is not None else f"{type(value).__name__}[{len(value)}]"  # type: ignore[arg-type]


def validity(path: Path, reference: Path | None = None, feed: dict | None = None) -> str:
    """'ok', or the first error line of each check that failed (``checker: ...;
    onnxruntime: ...; outputs: ...``). With a reference model and a feed, the outputs'
    shapes must also be fp32's: a quantizer that folds a dynamic Reshape into the export's
    declared (wrong) output shape returns the right numbers in a shape no decoder expects."""
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
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return "; ".join([*errors, "onnxruntime: " + one_line(exc)])
    if reference is not None and feed is not None:
        try:
            ref = ort.InferenceSession(str(reference), opts, providers=["CPUExecutionProvider"])
            want = [_shape(o) for o in ref.run(None, feed)]
            got = [_shape(o) for o in sess.run(None, feed)]
            names = [o.name for o in ref.get_outputs()]
            pairs = zip(names, got, want, strict=False)
            bad = [f"{n} {g} vs fp32 {w}" for n, g, w in pairs if g != w]
            if len(got) != len(want) or bad:
                errors.append("outputs: " + ("; ".join(bad) or f"{len(got)} vs {len(want)}"))
        except Exception as exc:
            errors.append("run: " + one_line(exc))
    return "; ".join(errors) or "ok"
