"""What several commands share: per-layer settings, the recover chain, the task."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from onnxcomp.errors import OnnxcompError
from onnxcomp.options.fields import (
    CLOSED_FORM,
    PRECISIONS,
    RECOVER_METHODS,
    TASKS,
    TRAINED,
    Precision,
    Task,
    option,
)


def validate_confidence(confidence: float | None) -> None:
    if confidence is not None and not (
        isinstance(confidence, (int, float))
        and not isinstance(confidence, bool)
        and 0.0 < confidence < 1.0
    ):
        raise OnnxcompError(f"--confidence must be in (0, 1), got {confidence}")


@dataclass
class LayerOptions:
    """What one layer gets; None: the global setting. See layers.py for the matching."""

    prune_sparsity: float | None = None
    precision: Precision | None = None
    prune_channels: float | None = None  # fraction of this layer's output channels removed
    bits: int | None = None  # --quantize codebook: this layer's codebook has 2**bits values

    def validate(self, name: str, global_quantize: str | None) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise OnnxcompError(f"layer '{name}': precision must be one of {', '.join(PRECISIONS)}")
        sparsity = self.prune_sparsity
        if sparsity is not None and (
            isinstance(sparsity, bool)
            or not isinstance(sparsity, (int, float))
            or not 0 <= sparsity < 1
        ):
            raise OnnxcompError(f"layer '{name}': prune sparsity must be in [0, 1)")
        if self.prune_channels is not None and not 0 <= self.prune_channels < 1:
            raise OnnxcompError(f"layer '{name}': prune_channels must be in [0, 1)")
        bits = self.bits
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int)):
            raise OnnxcompError(f"layer '{name}': bits must be an integer in 2..8")
        if bits is not None and not 2 <= bits <= 8:
            raise OnnxcompError(f"layer '{name}': bits must be in 2..8, got {bits}")
        if bits is not None and global_quantize != "codebook":
            raise OnnxcompError(f"layer '{name}' sets bits: set quantize = \"codebook\"")
        if self.precision == "int4" and global_quantize not in ("int4", "int8"):
            raise OnnxcompError(
                f"layer '{name}' asks for int4 weights: set quantize = \"int4\" "
                '(or "int8" with calib, to mix int4 and int8 layers)'
            )
        if self.precision == "int8" and global_quantize != "int8":
            raise OnnxcompError(
                f"layer '{name}' asks for int8 activations: set quantize = \"int8\" and calib"
            )


def validate_prune(threshold: float | None, sparsity: float | None) -> None:
    if threshold is not None and sparsity is not None:
        raise OnnxcompError("give either a prune threshold or a prune sparsity, not both")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise OnnxcompError(f"prune threshold must be a finite number >= 0, got {threshold}")
    if sparsity is not None and not (0.0 <= sparsity < 1.0):
        raise OnnxcompError(f"prune sparsity must be in [0, 1), got {sparsity}")


def recover_methods(spec: str | None) -> tuple[str, ...]:
    """``--recover``'s methods in the order they run: "gptq,distill" -> (gptq, distill)."""
    if not spec:
        return ()
    return tuple(part.strip() for part in str(spec).split(","))


def check_chain(spec: Any) -> tuple[str, ...]:
    """``--recover``'s methods, refused unless one method or a closed-form repair then a
    trained rung (which starts from the repaired values: the other order would repair
    the trained ones, two of a kind would redo one's work)."""
    methods = recover_methods(spec) if isinstance(spec, str) else ()
    if not methods or any(m not in RECOVER_METHODS for m in methods):
        raise OnnxcompError(
            f"--recover must be one of {', '.join(RECOVER_METHODS)}, or a closed-form repair "
            f"then a trained one (gptq,distill), got {spec!r}"
        )
    if len(methods) == 1:
        return methods
    first, *rest = methods
    if len(rest) > 1:
        raise OnnxcompError(
            f"--recover {spec}: at most two methods, a closed-form repair then blockwise or distill"
        )
    second = rest[0]
    if first in TRAINED and second in TRAINED:
        raise OnnxcompError(f"--recover {spec}: one trained method at a time")
    if first in CLOSED_FORM and second in CLOSED_FORM:
        raise OnnxcompError(
            f"--recover {spec}: one closed-form repair at a time (then blockwise or distill)"
        )
    if first in TRAINED:
        raise OnnxcompError(
            f"--recover {spec}: the closed-form repair comes first ({second},{first}): "
            "training starts from its values"
        )
    return methods


@dataclass(kw_only=True)
class TaskOptions:
    """How outputs are judged: a task metric, the user's own, or (neither) the worst
    output component. check's gate, auto's budget and compress's guards all use it."""

    task: Task | None = option(
        help="What the outputs mean, so fidelity is judged on the task: classify, detect, "
        "segment, sequence (ctc), embed, threshold, regress. Default: detected where the "
        "outputs are unambiguous (a YOLO-style head: detect; class scores: classify), "
        "else the worst output component."
    )
    task_arg: tuple[str, ...] = option(
        (),
        "KEY=VALUE setting of the task metric (repeatable): output, score (0.25), iou "
        "(NMS, 0.45), match_iou (0.5), format (auto|yolov8|yolov5|boxes-scores|nms), "
        "max_det, threshold (0.5), blank (0), k (5), time_major.",
        metavar="KEY=VALUE",
    )
    # A "module:function" (or "file.py:function") spec, or (from Python) the callable.
    metric_fn: Any = option(
        help="Your own metric: FUNCTION(original_outputs, compressed_outputs, labels) -> "
        "one score per sample, higher is better.",
        metavar="MODULE:FUNCTION",
    )

    def task_settings(self) -> Any:
        from onnxcomp.metrics.task import TaskSettings

        return TaskSettings.parse(tuple(self.task_arg or ()))

    def validate_task(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise OnnxcompError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task is not None and self.metric_fn is not None:
            raise OnnxcompError("give --task or --metric-fn, not both")
        if self.metric_fn is not None and not (
            callable(self.metric_fn) or isinstance(self.metric_fn, str)
        ):
            raise OnnxcompError("--metric-fn takes MODULE:FUNCTION or a callable")
        self.task_settings()
