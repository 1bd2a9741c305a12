"""What the int8 flow did and decided (``CompressReport.activations``), filled by the flow
and its measure step: a module of its own so both import it and neither imports the other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Int8Report:
    activation_type: str
    activation_type_reason: str
    calib_method: str
    reduced_ops: list[str] = field(default_factory=list)  # their weights in [-63, 63]
    weight_range_reason: str = ""
    calibration_seconds: float = 0.0
    calibration_samples: int = 0
    statistics_bytes: int = 0
    tensors: int = 0
    quantized_ops: dict[str, int] = field(default_factory=dict)
    kept_float: dict[str, str] = field(default_factory=dict)
    families_dropped: dict[str, str] = field(default_factory=dict)
    decoded_at_load: int = 0  # int8 weights of float ops, decoded once by onnxruntime at load
    latency_ratio: float | None = None  # int8 / float, onnxruntime, 1 thread
    # vs float on calibration data: 1 - the task metric's drop, or 1 - the worst component's error
    fidelity: float | None = None
    fidelity_metric: str = ""
    trials: list[dict[str, Any]] = field(default_factory=list)
    families: list[str] = field(default_factory=list)  # what stayed int8 (int8-families)
    decided_by: str = ""  # measured now, cached, the recipe, or nothing (--measure off)
    busy: str = ""  # what the timing saw of the machine's load

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
