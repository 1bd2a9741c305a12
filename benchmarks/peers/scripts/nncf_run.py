"""NNCF (ONNX backend) in its own venv: ``nncf.quantize`` on an onnx.ModelProto, or
``quantize_with_accuracy_control`` with a label-free metric.

Config keys: ``min_opset`` (upgrade older models first, as NNCF's warning advises),
``model_type`` ("transformer" or null), ``accuracy_control`` (bool),
``max_drop`` (absolute drop of the metric below).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nncf
import numpy as np
import onnx
import onnxruntime as ort
from _common import load_model, main


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _flat(outputs: list) -> np.ndarray:
    """Every float output of one sample as one vector (state outputs count too)."""
    parts = [
        np.asarray(o, dtype=np.float64).ravel() for o in outputs if np.asarray(o).dtype.kind == "f"
    ]
    return np.concatenate(parts) if parts else np.zeros(1)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float(np.array_equal(a, b))


def quantize(src: Path, out: Path, feeds: list[dict], cfg: dict) -> dict:
    model, upgraded = load_model(src, int(cfg.get("min_opset", 0)))
    model_type = nncf.ModelType.TRANSFORMER if cfg.get("model_type") == "transformer" else None
    calib = nncf.Dataset(feeds)
    extra: dict = {"model_type": cfg.get("model_type"), "subset_size": len(feeds)}
    if upgraded:
        extra["upgraded"] = upgraded
    if not cfg.get("accuracy_control"):
        q = nncf.quantize(model, calib, model_type=model_type, subset_size=len(feeds))
    else:
        # The metric: mean cosine of each sample's outputs to fp32's on the calibration
        # feeds (the evaluation split stays unseen). Per-sample values let NNCF rank layers.
        ref = _session(model)
        items = [{"feed": f, "ref": _flat(ref.run(None, f))} for f in feeds]
        del ref

        def validate(candidate: onnx.ModelProto, data) -> tuple[float, list[float]]:
            sess = _session(candidate)
            values = [_cosine(_flat(sess.run(None, it["feed"])), it["ref"]) for it in data]
            return float(np.mean(values)), values

        q = nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(items, lambda it: it["feed"]),
            nncf.Dataset(items),
            validate,
            max_drop=float(cfg.get("max_drop", 0.01)),
            model_type=model_type,
            subset_size=len(feeds),
        )
        extra.update(
            metric="output cosine to fp32 (calibration feeds)", max_drop=cfg.get("max_drop", 0.01)
        )
    onnx.save(q, str(out))
    return extra


if __name__ == "__main__":
    sys.exit(main(quantize, ("nncf",)))
