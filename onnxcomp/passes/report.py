"""What the passes of one compression did, written by the passes themselves.

``build_pipeline`` hands one ``CompressReport`` to every pass that has something to
say; each appends its records as it runs. Nobody reads pass attributes afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PruneRecord:
    name: str
    op_types: list[str]
    size: int
    zeros_before: int
    zeros_after: int

    @property
    def sparsity(self) -> float:
        return self.zeros_after / self.size if self.size else 0.0


@dataclass
class QuantRecord:
    name: str
    op_types: list[str]
    shape: tuple[int, ...]
    axis: int | None
    bytes_before: int
    bytes_after: int
    max_abs_error: float
    bits: int = 8
    relative_error: float | None = None  # ||W' - W|| / ||W||: the error on isotropic inputs


@dataclass
class CompressReport:
    pruned: list[PruneRecord] = field(default_factory=list)
    quantized: list[QuantRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # weight name -> why it stayed float
    stripped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    activations: dict[str, Any] = field(default_factory=dict)  # the int8 flow's report
    recovered: list[Any] = field(default_factory=list)  # RecoverRecord per rebuilt layer
    quantized_to: str = "int8"  # what the quantized weights became ("codebook (4-bit)")
