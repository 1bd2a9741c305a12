"""``onnxcomp check``'s and ``onnxcomp auto``'s options."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onnxcomp.errors import OnnxcompError
from onnxcomp.options.common import TaskOptions, validate_confidence
from onnxcomp.options.fields import (
    OBJECTIVES,
    Engine,
    Metric,
    Objective,
    RecoverMethod,
    option,
    required,
)


@dataclass(kw_only=True)
class CheckOptions(TaskOptions):
    data: Any = option(help=".npz, folder of .npz, or ONNX test-data folder.", metavar="DATA")
    labels: str | None = option(help="Array in DATA holding the true labels.", metavar="NAME")
    runs: int = option(50, "Timed runs per model.", show_default=True, min=0)
    threads: int = option(1, "onnxruntime intra-op threads.", show_default=True, min=1)
    warmup: int = option(5, cli=False)
    max_drop: float | None = option(
        help="Exit 1 when the accuracy drop (or 1 - top-1 agreement) exceeds X.", metavar="X"
    )
    confidence: float | None = option(
        help="With --max-drop: pass only when the one-sided upper bound of the drop at this "
        "confidence (e.g. 0.95) is within X, so noise on a small set cannot pass a model. "
        "Exact binomial for accuracy/agreement, bootstrap for cosine. Default: off (the "
        "measured drop is compared).",
        metavar="C",
    )

    def validate(self) -> None:
        self.validate_task()
        if self.runs < 0:
            raise OnnxcompError(f"--runs must be >= 0, got {self.runs}")
        if self.threads < 1:
            raise OnnxcompError(f"--threads must be >= 1, got {self.threads}")
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise OnnxcompError(f"--max-drop must be in [0, 1], got {self.max_drop}")
        validate_confidence(self.confidence)
        if self.labels is not None and self.data is None:
            raise OnnxcompError("--labels needs --data")


@dataclass(kw_only=True)
class AutoOptions(TaskOptions):
    calib: Any = option(help="Calibration data (needed for int8).", metavar="DATA")
    data: Any = option(help="Evaluation data (default: the calibration data).", metavar="DATA")
    labels: str | None = option(help="Array in DATA with the true labels.", metavar="NAME")
    max_drop: float = required(
        "Largest metric drop allowed (accuracy, or 1 - agreement/cosine).", metavar="X"
    )
    objective: Objective = option(
        "size",
        "size: smallest file (codebook codes packed); latency: fastest in onnxruntime.",
        show_default=True,
    )
    # A name, or (from Python) a callable(session, data) -> float, higher is better.
    metric: Metric | Callable[..., float] | None = option(
        help="Default: accuracy with --labels, else agreement, else cosine."
    )
    max_trials: int = option(60, show_default=True, min=1)
    time_limit: float | None = option(help="Stop searching after S seconds.", metavar="S")
    workers: int = option(
        2, "Trials run in parallel in this many processes.", show_default=True, min=1
    )
    recover: RecoverMethod | None = option(
        help="Repair every trial from --calib data (sparsegpt for pruned layers, gptq for "
        "quantized weights, bias for both); distill: trials stay plain, and a finalist "
        "that misses the budget on the held-back data is distilled and judged again."
    )
    engine: Engine = option(
        "local", "Where trials run: local processes, or Ray tasks (needs onnxcomp[ray]).",
        flag="--executor", recipe=False, show_default=True,
    )  # fmt: skip
    address: str | None = option(
        help="Ray cluster to join (default: start a local Ray).", metavar="ADDR", recipe=False
    )
    # A path, or (from Python) any source data.py reads; None: held back from the data.
    verify: Any = option(
        help="Held-back data the finalists are judged on (default: --verify-fraction of the "
        "search data, which the search then never sees).",
        metavar="DATA",
    )
    verify_fraction: float | None = option(
        help="Share of the data held back for verification (default: 1/3, raised up to "
        "5/6 when that is what lets the held-back part resolve the budget).",
        metavar="F",
    )
    confidence: float = option(
        0.95,
        "A finalist is accepted when the upper bound of its held-back drop at this "
        "confidence is within --max-drop.",
        show_default=True,
        metavar="C",
    )
    allow_small_data: bool = option(
        False,
        "When the held-back data is too small to resolve the budget, proceed with a "
        "widened margin instead of refusing (exit 2).",
    )
    seed: int = option(0, "Seed of the split.", show_default=True, min=0)
    executor: Any = option(cli=False)  # an executor.TrialExecutor; None: a local pool
    log: Callable[[str], None] | None = option(cli=False)
    # The HTML report, published with OUT and its side files or not at all.
    html: str | None = option(cli=False)
    html_page: Callable[..., Any] | None = option(cli=False)  # writes it: (result, path)

    def validate(self) -> None:
        self.validate_task()
        if self.objective not in OBJECTIVES:
            raise OnnxcompError(f"--objective must be size or latency, got {self.objective!r}")
        if not 0 <= self.max_drop <= 1:
            raise OnnxcompError(f"--max-drop must be in [0, 1], got {self.max_drop}")
        if self.max_trials < 1:
            raise OnnxcompError(f"--max-trials must be >= 1, got {self.max_trials}")
        if self.address is not None and self.engine != "ray":
            raise OnnxcompError("--address needs --executor ray")
        limit = self.time_limit
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            raise OnnxcompError(f"--time-limit must be a number of seconds > 0, got {limit}")
        workers = self.workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OnnxcompError(f"--workers must be an integer >= 1, got {workers!r}")
        if self.objective == "latency" and self.calib is None:
            raise OnnxcompError("--objective latency needs --calib: only full int8 runs faster")
        if self.recover == "blockwise":
            raise OnnxcompError(
                "auto --recover blockwise is not available yet: repair the chosen recipe with "
                "compress --recover blockwise"
            )
        if self.recover == "distill":
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise OnnxcompError(
                    "--recover distill needs PyTorch: pip install 'onnxcomp[distill]'"
                )
        if self.recover is not None and self.calib is None:
            raise OnnxcompError(
                f"--recover {self.recover} needs calibration data: give --calib DATA"
            )
        if self.calib is None and self.data is None:
            raise OnnxcompError("auto needs data to measure on: give --calib or --data")
        fraction = self.verify_fraction
        if fraction is not None and (
            isinstance(fraction, bool)
            or not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0)
        ):
            raise OnnxcompError(f"--verify-fraction must be in (0, 1), got {fraction}")
        if self.confidence is None:
            raise OnnxcompError("--confidence must be in (0, 1), got None")
        validate_confidence(self.confidence)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OnnxcompError(f"--seed must be an integer >= 0, got {self.seed!r}")
