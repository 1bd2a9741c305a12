"""Latency of onnxruntime sessions, measured side by side so machine noise cancels.

Sessions run alternately (A B B A ...) on the same feed with a fixed thread count,
after warm-up; we report median and p90 per session, never a single timing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from onnxcomp.errors import OnnxcompError, one_line
from onnxcomp.runtime.session import make_session


@dataclass
class LatencyStats:
    median_ms: float
    p90_ms: float
    runs: int
    # Every timing, for plots (report/check_page.py); left out of JSON to keep it small.
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "runs": self.runs}


def session(path: str | os.PathLike, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with a fixed thread budget (what a deployment would configure)."""
    try:
        return make_session(os.fspath(path), threads=threads)
    except Exception as exc:
        raise OnnxcompError(f"{path}: onnxruntime cannot load the model: {one_line(exc)}") from None


def compare_latency(
    sessions: list[ort.InferenceSession],
    feed: dict[str, np.ndarray],
    *,
    runs: int = 50,
    warmup: int = 5,
) -> list[LatencyStats]:
    """Time each session on ``feed``, interleaved, alternating the order every round."""
    if runs < 1:
        raise OnnxcompError(f"--runs must be >= 1, got {runs}")
    for s in sessions:
        for _ in range(warmup):
            s.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    order = list(range(len(sessions)))
    for i in range(runs):
        for j in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            sessions[j].run(None, feed)
            times[j].append((time.perf_counter() - start) * 1000.0)
    return [
        LatencyStats(float(np.median(t)), float(np.percentile(t, 90)), len(t), tuple(t))
        for t in times
    ]
