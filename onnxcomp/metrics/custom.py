"""A user's own metric: ``--metric-fn module:function``.

The function is called per batch as ``fn(original_outputs, compressed_outputs, labels)``
(outputs as dicts of numpy arrays by output name; labels None without ``--labels``) and
returns one score per sample, higher is better (e.g. 1.0 where the compressed model
reads the same as the original). The drop of a sample is the original's score
(``fn(original, original, labels)``) minus the compressed model's, so the statistical
bound works as for the built-in metrics; scores that are all 0/1 get the exact binomial
bound.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.metrics.task import Outputs, TaskMetric, TaskResult

MetricFunction = Callable[[Outputs, Outputs, Any], Any]


def load(spec: str | MetricFunction) -> MetricFunction:
    """``module:function`` (a module importable from here or the working folder, or a
    path ``file.py:function``) to the callable."""
    if callable(spec):
        return spec
    module, sep, name = str(spec).rpartition(":")
    if not sep or not module or not name:
        raise OnnxcompError(f"--metric-fn takes MODULE:FUNCTION, got {spec!r}")
    try:
        if module.endswith(".py"):
            path = Path(module).resolve()
            if not path.is_file():
                raise OnnxcompError(f"--metric-fn: no file {module}")
            loader = importlib.util.spec_from_file_location(path.stem, path)
            if loader is None or loader.loader is None:
                raise OnnxcompError(f"--metric-fn: cannot load {module}")
            mod = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(mod)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            mod = importlib.import_module(module)
    except OnnxcompError:
        raise
    except Exception as exc:
        raise OnnxcompError(f"--metric-fn: cannot import {module}: {one_line(exc)}") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise OnnxcompError(f"--metric-fn: {module} has no function {name!r}")
    return fn


def spec_name(spec: str | MetricFunction) -> str:
    if isinstance(spec, str):
        return spec
    return f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__name__', 'custom')}"


class Custom(TaskMetric):
    name = "custom"
    binary = False

    def __init__(self, fn: MetricFunction, label: str, settings=None) -> None:
        super().__init__(settings)
        self.fn, self.label = fn, label
        self._ref: list[np.ndarray] = []
        self._new: list[np.ndarray] = []

    def _call(self, a: Outputs, b: Outputs, labels: Any) -> np.ndarray:
        n = next((v.shape[0] for v in a.values() if np.ndim(v)), 1)
        try:
            scores = np.asarray(self.fn(a, b, labels), dtype=np.float64).reshape(-1)
        except OnnxcompError:
            raise
        except Exception as exc:
            raise OnnxcompError(f"--metric-fn {self.label} failed: {one_line(exc)}") from None
        if scores.shape[0] != n or not np.all(np.isfinite(scores)):
            raise OnnxcompError(
                f"--metric-fn {self.label} must return {n} finite per-sample scores, got "
                f"shape {scores.shape}"
            )
        return scores

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        self._ref.append(self._call(ref, ref, labels))
        self._new.append(self._call(ref, new, labels))

    def result(self) -> TaskResult:
        r, n = np.concatenate(self._ref), np.concatenate(self._new)
        binary = bool(np.all(np.isin(r, (0.0, 1.0))) and np.all(np.isin(n, (0.0, 1.0))))
        return TaskResult(self.name, self.label, float(r.mean()), float(n.mean()), r - n, binary,
                          detail=f"per-sample scores from {self.label}")  # fmt: skip
