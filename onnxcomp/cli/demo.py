"""A real small model made on the spot: an MLP trained on scikit-learn's bundled digits.

scikit-learn is only needed here (extra ``onnxcomp[demo]``); the ONNX graph is written
by hand with onnx.helper so no converter is involved. The held-out test split goes to
an ``.npz`` with labels, a separate calibration split to another.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.errors import OnnxcompError

INPUT = "pixels"
OUTPUT = "probabilities"
LABELS = "label"


def _load_digits():
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise OnnxcompError(
            "the digits demo needs scikit-learn: pip install 'onnxcomp[demo]'"
        ) from None
    return load_digits, train_test_split, MLPClassifier


def train_digits(hidden: tuple[int, ...] = (512, 256), seed: int = 0):
    """Train the classifier; returns (weights, biases, splits) with pixels scaled to [0, 1]."""
    load_digits, train_test_split, mlp_cls = _load_digits()
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=seed, stratify=y
    )
    x_calib, x_test, y_calib, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    clf = mlp_cls(hidden_layer_sizes=hidden, max_iter=400, random_state=seed, alpha=1e-3)
    clf.fit(x_train, y_train)
    splits = {"calib": (x_calib, y_calib), "test": (x_test, y_test)}
    return clf.coefs_, clf.intercepts_, splits


def digits_graph(weights: list[np.ndarray], biases: list[np.ndarray]) -> onnx.ModelProto:
    """Gemm + Relu layers, then Softmax: the shape most exported classifiers have."""
    nodes, inits = [], []
    current = INPUT
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        wn, bn, out = f"fc{i}.weight", f"fc{i}.bias", f"fc{i}"
        inits += [
            numpy_helper.from_array(np.ascontiguousarray(w.T, dtype=np.float32), wn),
            numpy_helper.from_array(b.astype(np.float32), bn),
        ]
        nodes.append(helper.make_node("Gemm", [current, wn, bn], [out], name=out, transB=1))
        current = out
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    nodes.append(helper.make_node("Softmax", [current], [OUTPUT], name="softmax", axis=1))
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxcomp-demo"
    )
    model.ir_version = 8
    helper.set_model_props(model, {"labels": ",".join(str(i) for i in range(10))})
    onnx.checker.check_model(model, full_check=True)
    return model


def build_digits(out_dir: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Write digits.onnx, digits_test.npz and digits_calib.npz; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights, biases, splits = train_digits()
    model_path = out / "digits.onnx"
    onnx.save(digits_graph(weights, biases), model_path)
    paths = []
    for split in ("test", "calib"):
        x, y = splits[split]
        path = out / f"digits_{split}.npz"
        np.savez(path, **{INPUT: x, LABELS: y})
        paths.append(path)
    return model_path, paths[0], paths[1]
