"""One trial: compress with a configuration, then measure size and metric.

Runs in a worker (a process of the pool, or in-process): the worker builds its own
evaluator once, from picklable arguments, and reuses it for every trial it gets.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxcomp.auto.space import deflate_size
from onnxcomp.errors import OnnxcompError, environment_error, one_line
from onnxcomp.evaluate import Evaluator
from onnxcomp.io import model_io
from onnxcomp.io.data import input_specs, open_data
from onnxcomp.pipeline.compress import CompressOptions, compress
from onnxcomp.stats import loss


@dataclass
class TrialTask:
    id: int
    stage: str
    config: dict[str, int]
    options: CompressOptions
    workdir: str
    keep: bool = False


@dataclass
class TrialResult:
    id: int
    stage: str
    config: dict[str, int]
    value: float | None = None
    drop: float | None = None
    loss: float | None = None  # what the held-back bound is on (stats.loss); None: custom
    deviation: float | None = None  # evaluate.Score.deviation (0/1 metrics only)
    lost: int | None = None  # 0/1 metrics: samples newly wrong (or changed) ...
    samples: int | None = None  # ... of this many
    bytes: int | None = None
    deflate_bytes: int | None = None
    seconds: float = 0.0
    pid: int = 0
    error: str | None = None
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def risk(self) -> float:
        """What the search ranks layers and finalists by: the drop, or for a 0/1 metric
        how far the outputs moved (the drop stays 0 long after they start to)."""
        if self.deviation is not None:
            return self.deviation
        return self.drop if self.drop is not None else float("inf")


class _State:
    original: str = ""
    evaluator: Evaluator | None = None


def init_worker(original: str, data: Any, labels: str | None, metric: Any) -> None:
    """Build the evaluator once per worker (the original's outputs are cached in it)."""
    _State.original = original
    specs = input_specs(model_io.load(original))
    source = open_data(data, specs, labels=labels)
    _State.evaluator = Evaluator(original, source, metric=metric)


def worker_evaluator() -> Evaluator:
    """The evaluator ``init_worker`` built in this process."""
    assert _State.evaluator is not None, "init_worker has not run in this process"
    return _State.evaluator


def run_trial(task: TrialTask) -> TrialResult:
    start = time.perf_counter()
    result = TrialResult(task.id, task.stage, dict(task.config), pid=os.getpid())
    out = Path(task.workdir) / f"trial_{task.id:04d}.onnx"
    try:
        compress(_State.original, out, task.options)
        assert _State.evaluator is not None
        score = _State.evaluator.score(out)
        result.value, result.drop = score.value, score.drop
        result.loss = loss(
            score.drops, _State.evaluator.metric_name, binary=_State.evaluator.binary
        )
        result.deviation = score.deviation
        if score.deviation is not None and score.drops is not None:
            result.lost = int(np.count_nonzero(np.asarray(score.drops) > 0))
            result.samples = int(np.size(score.drops))
        result.bytes = model_io.file_size(out)
        result.deflate_bytes = deflate_size(out)
        if task.keep:
            result.path = str(out)
    except OnnxcompError as exc:
        result.error = str(exc)
    except OSError as exc:
        fault = environment_error(exc)  # a full disk is no budget miss: stop the search
        if fault is not None:
            raise fault from None
        result.error = f"{type(exc).__name__}: {one_line(exc, 200)}"
    except Exception as exc:  # a trial must never take the search down
        result.error = f"{type(exc).__name__}: {one_line(str(exc), 200)}"
    finally:
        if not task.keep and out.exists():
            out.unlink()
    result.seconds = time.perf_counter() - start
    return result
