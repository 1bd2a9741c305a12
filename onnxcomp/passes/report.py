"""What the passes of one compression did, written by the passes themselves.

``build_pipeline`` hands one ``CompressReport`` to every pass that has something to
say; each appends its records as it runs. Nobody reads pass attributes afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onnxcomp.passes.prune import PruneRecord
    from onnxcomp.passes.quantize_weights import QuantRecord


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
