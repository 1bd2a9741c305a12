"""The list of corpus models, one module per task family."""

from __future__ import annotations

from benchmarks.corpus import (
    RealModel,
    faces,
    files,
    layout,
    ocr,
    speech,
    tabular,
    text,
    text_g2p,
    text_more,
)

ALL: list[RealModel] = [
    *ocr.MODELS,
    *speech.MODELS,
    *text.MODELS,
    *text_more.MODELS,
    *text_g2p.MODELS,
    *files.MODELS,
    *tabular.MODELS,
    *layout.MODELS,
    *faces.MODELS,
]
