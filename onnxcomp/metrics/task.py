"""What every task metric gives: a per-sample drop, so budgets and bounds work alike.

A task metric compares the compressed model's outputs with the original's the way the
task reads them (detections found, characters read, neighbours retrieved, decisions
taken) or, with labels, both models against the labels. Its drop is the mean of a
per-sample drop (0/1 for decisions, continuous for errors), which is what a budget
(``--max-drop``) limits and what the statistical bound (stats.py) is taken on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from onnxcomp.errors import OnnxcompError

Outputs = dict[str, np.ndarray]  # one batch of a model's outputs, by output name


@dataclass
class TaskResult:
    task: str  # classify, detect, ...
    metric: str  # the primary figure, e.g. "F1 vs original"
    original: float  # primary figure of the original (1.0 when judged against it)
    compressed: float
    drops: np.ndarray  # per-sample drops; their mean is the drop
    binary: bool  # per-sample drops are decisions (exact binomial bound)
    figures: dict[str, float] = field(default_factory=dict)  # secondary figures
    against: str = "original"  # "original" or "labels"
    detail: str = ""  # how the outputs were read (decoder, thresholds)
    # A binary task's continuous per-sample drops, for decisions on a few samples (a
    # flip rate needs hundreds); None: the worst output component stands in.
    gauge: np.ndarray | None = None
    gauge_label: str = ""

    @property
    def drop(self) -> float:
        return float(self.drops.mean()) if self.drops.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "original": self.original,
            "compressed": self.compressed,
            "drop": self.drop,
            "samples": int(self.drops.size),
            "binary": self.binary,
            "against": self.against,
            "figures": dict(self.figures),
            "detail": self.detail,
        }


@dataclass
class TaskSettings:
    """The knobs the task metrics read, from ``--task-arg KEY=VALUE`` (or a dict)."""

    output: str | None = None  # the output the task reads (default: chosen per task)
    score: float = 0.25  # detect: score threshold before NMS
    iou: float = 0.45  # detect: NMS IoU threshold
    match_iou: float = 0.5  # detect: IoU at which a detection matches a reference one
    format: str = "auto"  # detect: yolov8 | yolov5 | boxes-scores | nms | auto
    max_det: int = 300  # detect: detections kept per image after NMS
    threshold: float | None = None  # threshold/segment: decision threshold (default 0.5)
    blank: int = 0  # sequence: the CTC blank index
    k: int = 5  # classify: top-k agreement; embed: neighbours for recall@k
    time_major: bool = False  # sequence: outputs are [T, N, C]
    mask: str | None = None  # embed: the input holding the attention mask (default: found)

    @classmethod
    def parse(cls, args: dict[str, Any] | list[str] | tuple[str, ...] | None) -> TaskSettings:
        if args is None:
            return cls()
        if isinstance(args, (list, tuple)):
            pairs: dict[str, Any] = {}
            for item in args:
                key, sep, value = str(item).partition("=")
                if not sep or not key.strip():
                    raise OnnxcompError(f"--task-arg takes KEY=VALUE, got {item!r}")
                pairs[key.strip().replace("-", "_")] = value.strip()
            args = pairs
        settings = cls()
        for key, value in args.items():
            name = key.replace("-", "_")
            if name not in cls.__dataclass_fields__:
                known = ", ".join(cls.__dataclass_fields__)
                raise OnnxcompError(f"--task-arg: unknown key {key!r} (known: {known})")
            setattr(settings, name, _coerce(name, value))
        return settings


def _coerce(name: str, value: Any) -> Any:
    kind: dict[str, type] = {"score": float, "iou": float, "match_iou": float}
    kind.update({"threshold": float, "max_det": int, "blank": int, "k": int})
    try:
        if name in kind:
            out = kind[name](value)
            if isinstance(out, float) and not np.isfinite(out):
                raise ValueError
            if name in ("max_det", "k") and out < 1:
                raise ValueError
            return out
        if name == "time_major":
            return str(value).lower() in ("1", "true", "yes", "on")
        return None if value in (None, "") else str(value)
    except (TypeError, ValueError):
        raise OnnxcompError(f"--task-arg {name}: not a valid value: {value!r}") from None


class TaskMetric:
    """Base of the task metrics: ``update`` per batch, ``result`` at the end."""

    name: ClassVar[str] = ""
    binary: ClassVar[bool] = True

    def __init__(self, settings: TaskSettings | None = None) -> None:
        self.settings = settings or TaskSettings()
        self.feed: dict[str, np.ndarray] | None = None  # the batch's inputs, when known

    def update(self, ref: Outputs, new: Outputs, labels: np.ndarray | None) -> None:
        raise NotImplementedError

    def result(self) -> TaskResult:
        raise NotImplementedError

    def pick(self, outputs: Outputs, want: str = "float") -> tuple[str, np.ndarray]:
        """The output the task reads: --task-arg output=NAME, else the first float one."""
        name = self.settings.output
        if name is not None:
            if name not in outputs:
                raise OnnxcompError(
                    f"--task-arg output={name}: no such output (have {', '.join(outputs)})"
                )
            return name, np.asarray(outputs[name])
        for key, value in outputs.items():
            a = np.asarray(value)
            if (want == "float" and a.dtype.kind == "f") or (want == "any" and a.size):
                return key, a
        raise OnnxcompError(f"task '{self.name}': no {want} output to read")
