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
    text_more,
)

ALL: list[RealModel] = [
    *ocr.MODELS,
    *speech.MODELS,
    *text.MODELS,
    *text_more.MODELS,
    *files.MODELS,
    *tabular.MODELS,
    *layout.MODELS,
    *faces.MODELS,
]
