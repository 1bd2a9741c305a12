"""Corpus models: files.

``magika``: Google's file-type classifier (standard_v3_3, a tf2onnx export at opset 15
with an ai.onnx.ml import; input ``bytes`` int32 [N, 2048], output ``target_label``
[N, 214] probabilities). Features are rebuilt from the wheel's ``magika.py`` (1.0.3):
read at most ``block_size`` bytes from each end of the file, ``lstrip()`` the head and
``rstrip()`` the tail (ASCII whitespace), keep ``beg_size`` head bytes padded after with
``padding_token`` and ``end_size`` tail bytes padded before; files whose 8th head token is
padding never reach the model in magika, so we skip them. Sizes come from the wheel's
``config.min.json``, not from constants here.

Evaluation data: real files under /usr and /etc whose type follows from where they are
(extension in a system tree). Only types for which fp32 magika is mostly right are used
(checked over 40 files per type on the reference machine; left out: ``.txt`` mostly rst,
``.ini``/``.cfg`` 38 %, Perl 40 %, ``.crt`` read as pem, ``.ico`` 4 of 6), so the metric
tracks the model and not our labelling. Files are chosen per type by a seeded hash of the
path, so a package installed later only adds candidates instead of reshuffling all of
them; calibration files are the next ones in the same order, disjoint from evaluation.
The score is the raw model's top-1 label (magika's confidence thresholds and overwrite
map are output policy, not the model).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.corpus import Prepared, RealModel, Score, Wheel
from benchmarks.corpus import session as _session
from benchmarks.corpus.fetch import read_member

if TYPE_CHECKING:
    pass

WHEEL = Wheel(
    package="magika",
    version="1.0.3",
    filename="magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
    sha256="3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
    licence="Apache-2.0",
)
MODEL_DIR = "magika/models/standard_v3_3/"
ROOTS = ("/usr", "/etc")
SKIP = ("/usr/src",)  # kernel sources, where present
SEED = "onnxcomp-magika-0"
PER_LABEL = 16  # evaluation files per type (fewer when the machine has fewer)
N_CALIB = 64

# Extension -> magika label, for the types fp32 magika gets mostly right here.
EXTENSIONS = {
    "c": "c",
    "h": "c",
    "hpp": "cpp",
    "cpp": "cpp",
    "css": "css",
    "csv": "csv",
    "so": "elf",
    "gif": "gif",
    "go": "go",
    "gz": "gzip",
    "html": "html",
    "htm": "html",
    "jar": "jar",
    "js": "javascript",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "json": "json",
    "md": "markdown",
    "pdf": "pdf",
    "pem": "pem",
    "png": "png",
    "py": "python",
    "pyc": "pythonbytecode",
    "rst": "rst",
    "sh": "shell",
    "sql": "sql",
    "svg": "svg",
    "tcl": "tcl",
    "toml": "toml",
    "ttf": "ttf",
    "xml": "xml",
    "yaml": "yaml",
    "yml": "yaml",
    "whl": "zip",
    "zip": "zip",
}


def config() -> dict:
    """The model's own feature and label configuration, from the pinned wheel."""
    return json.loads(read_member(WHEEL, MODEL_DIR + "config.min.json"))


def features(path: Path, cfg: dict) -> np.ndarray | None:
    """magika 1.0.3 features of one file (int32 [2048]); None where magika skips the model."""
    beg_size, end_size, pad = cfg["beg_size"], cfg["end_size"], cfg["padding_token"]
    size = path.stat().st_size
    if size < cfg["min_file_size_for_dl"]:
        return None
    n = min(cfg["block_size"], size)
    with open(path, "rb") as f:
        head = f.read(n)
        f.seek(size - n)
        tail = f.read(n)
    beg = list(head.lstrip()[:beg_size])
    beg += [pad] * (beg_size - len(beg))
    end = list(tail.rstrip()[-end_size:]) if end_size else []
    end = [pad] * (end_size - len(end)) + end
    if beg[cfg["min_file_size_for_dl"] - 1] == pad:
        return None
    return np.asarray(beg + end, dtype=np.int32)


def candidates() -> dict[str, list[Path]]:
    """Regular files by label, each list in seeded-hash order."""
    found: dict[str, list[tuple[str, Path]]] = {}
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath.startswith(SKIP):
                dirnames[:] = []
                continue
            for name in filenames:
                label = EXTENSIONS.get(name.rsplit(".", 1)[-1].lower()) if "." in name else None
                path = os.path.join(dirpath, name)
                if label is None or os.path.islink(path) or not os.path.isfile(path):
                    continue
                key = hashlib.sha256(f"{SEED}:{path}".encode()).hexdigest()
                found.setdefault(label, []).append((key, Path(path)))
    return {label: [p for _, p in sorted(items)] for label, items in sorted(found.items())}


def prepare_magika(model_file: Path, folder: Path) -> Prepared:
    """Features of PER_LABEL files per type for evaluation, the next ones for calibration."""
    cfg = config()
    evals: list[tuple[Path, str, np.ndarray]] = []
    spare: dict[str, list[tuple[Path, np.ndarray]]] = {}
    for label, paths in candidates().items():
        taken: list[tuple[Path, np.ndarray]] = []
        for path in paths:
            if len(taken) == PER_LABEL + N_CALIB:
                break
            try:
                feats = features(path, cfg)
            except OSError:
                continue
            if feats is not None:
                taken.append((path, feats))
        evals += [(p, label, f) for p, f in taken[:PER_LABEL]]
        spare[label] = taken[PER_LABEL:]
    calib: list[tuple[Path, np.ndarray]] = []
    while len(calib) < N_CALIB and any(spare.values()):  # round robin over types
        for label in sorted(spare):
            if spare[label] and len(calib) < N_CALIB:
                calib.append(spare[label].pop(0))
    calib_dir, eval_dir = folder / "calib", folder / "eval"
    calib_dir.mkdir()
    eval_dir.mkdir()
    for i, (_, feats) in enumerate(calib):
        np.savez(calib_dir / f"c{i:04d}.npz", bytes=feats[None])
    for i, (_, _, feats) in enumerate(evals):
        np.savez(eval_dir / f"e{i:04d}.npz", bytes=feats[None])
    manifest = {
        "eval": [[str(p), label] for p, label, _ in evals],
        "calib": [str(p) for p, _ in calib],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    extra = {"targets": [label for _, label, _ in evals], "labels": cfg["target_labels_space"]}
    return Prepared("magika", folder, model_file, calib_dir, eval_dir, extra)


def score_magika(model_file: Path, prepared: Prepared, threads: int) -> Score:
    """Top-1 accuracy against the type known from the path; macro and worst-type too."""
    sess = _session(model_file, threads)
    labels, targets = prepared.extra["labels"], prepared.extra["targets"]
    preds = []
    for i in range(len(targets)):
        with np.load(prepared.eval / f"e{i:04d}.npz") as z:
            probs = sess.run(["target_label"], {"bytes": z["bytes"]})[0]
        preds.append(labels[int(np.argmax(probs[0]))])
    right = np.array([p == t for p, t in zip(preds, targets, strict=True)])
    per_type = {t: float(right[[x == t for x in targets]].mean()) for t in sorted(set(targets))}
    worst = min(per_type, key=per_type.__getitem__)
    return Score(
        "accuracy",
        float(right.mean()),
        {
            "macro_accuracy": float(np.mean(list(per_type.values()))),
            "worst_type_accuracy": per_type[worst],
            "types": float(len(per_type)),
        },
    )


MODELS: list[RealModel] = [
    RealModel(
        name="magika",
        wheel=WHEEL,
        member=MODEL_DIR + "model.onnx",
        exporter="tf2onnx (Keras, opset 15 + ai.onnx.ml)",
        task="file-type detection from head/tail bytes: real /usr and /etc files, "
        "type known from their extension, top-1 accuracy",
        metric="accuracy",
        prepare=prepare_magika,
        score=score_magika,
    )
]
