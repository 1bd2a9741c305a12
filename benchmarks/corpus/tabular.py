"""Corpus models: tabular.

``sklearn-digits``: no author ships this one; it is what a scikit-learn user exports.
StandardScaler + MLPClassifier(128, 64), seeded, trained on the 8x8 digits that
scikit-learn bundles, converted by ``skl2onnx.to_onnx`` with its defaults except a pinned
opset (ai.onnx.ml Scaler, MatMul/Add/Relu/Softmax, ArgMax + ArrayFeatureExtractor for the
label and a ZipMap on the probabilities, as a default export has). Its graph has a
non-tensor output (sequence of maps), which tensor-only tools must tolerate.

The framework extracts one member of a pinned wheel; here the member is the data,
``sklearn/datasets/data/digits.csv.gz`` from the scikit-learn wheel, so the data set is
pinned by sha256 even though training runs on the installed scikit-learn. ``prepare``
reads that file (written where the model would be) and replaces it with the built model.
Splits (seeded): 1197 train, 100 calibration, 500 evaluation, disjoint.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel
from benchmarks.corpus import session as _session

if TYPE_CHECKING:
    pass

WHEEL = Wheel(
    package="scikit-learn",
    version="1.9.1",
    filename="scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    sha256="52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
    licence="BSD-3-Clause (digits: UCI optical recognition of handwritten digits, CC BY 4.0)",
)
MEMBER = "sklearn/datasets/data/digits.csv.gz"
INPUT = "X"  # the name skl2onnx.to_onnx gives the input
N_EVAL, N_CALIB = 500, 100
SEED = 0
OPSET = {"": 17, "ai.onnx.ml": 3}  # a ceiling, pinned so a newer skl2onnx exports the same ops


def _load(data_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits: 1797 rows of 64 pixel values (0-16) and the digit."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(data_file.read_bytes())), delimiter=",")
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)


def prepare_digits(data_file: Path, folder: Path) -> Prepared:
    """Train on the train split, export with skl2onnx, write calib and eval feeds."""
    from onnx import helper
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _load(data_file)
    order = np.random.default_rng(SEED).permutation(len(y))
    ev, cal, tr = order[:N_EVAL], order[N_EVAL : N_EVAL + N_CALIB], order[N_EVAL + N_CALIB :]
    pipe = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=500, random_state=SEED),
    )
    pipe.fit(x[tr], y[tr])
    onx = to_onnx(pipe, x[tr][:1], target_opset=OPSET)
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)  # set order varies
    del onx.opset_import[:]
    onx.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets)
    model_file = folder / "model.onnx"
    data_file.unlink()  # the extracted csv.gz sat at the model's path
    model_file.write_bytes(onx.SerializeToString())
    calib_dir, eval_dir = folder / "calib", folder / "eval"
    calib_dir.mkdir()
    eval_dir.mkdir()
    for i, row in enumerate(cal):
        np.savez(calib_dir / f"c{i:04d}.npz", **{INPUT: x[row : row + 1]})
    for i, row in enumerate(ev):
        np.savez(eval_dir / f"e{i:04d}.npz", **{INPUT: x[row : row + 1], "label": y[row : row + 1]})
    extra = {"eval": N_EVAL, "train": len(tr), "sklearn_accuracy": float(pipe.score(x[ev], y[ev]))}
    return Prepared("sklearn-digits", folder, model_file, calib_dir, eval_dir, extra)


def _probabilities(value: object) -> np.ndarray:
    """[1, 10] from either a ZipMap output (list of {class: p}) or a plain tensor."""
    if isinstance(value, list):
        return np.array([[row[k] for k in sorted(row)] for row in value], dtype=np.float64)
    return np.asarray(value, dtype=np.float64)


def score_digits(model_file: Path, prepared: Prepared, threads: int) -> Score:
    """Accuracy of the label output; log-loss of the probabilities as a secondary figure."""
    sess = _session(model_file, threads)
    label_name, prob_name = (o.name for o in sess.get_outputs())
    right, nll = 0, 0.0
    n = int(prepared.extra["eval"])
    for i in range(n):
        with np.load(prepared.eval / f"e{i:04d}.npz") as z:
            label, probs = sess.run([label_name, prob_name], {INPUT: z[INPUT]})
            target = int(z["label"][0])
        right += int(label[0]) == target
        nll -= float(np.log(max(_probabilities(probs)[0, target], 1e-15)))
    return Score("accuracy", right / n, {"log_loss": nll / n})


MODELS: list[RealModel] = [
    RealModel(
        name="sklearn-digits",
        wheel=WHEEL,
        member=MEMBER,
        exporter="scikit-learn (skl2onnx.to_onnx, opset 17 + ai.onnx.ml 1, ZipMap kept)",
        task="8x8 handwritten digit classification, scikit-learn's bundled digits, "
        "held-out accuracy",
        metric="accuracy",
        prepare=prepare_digits,
        score=score_digits,
        needs=("sklearn", "skl2onnx"),
    )
]
