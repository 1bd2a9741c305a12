from __future__ import annotations

from pathlib import Path

import onnx
import pytest


@pytest.fixture
def save_model(tmp_path):
    """Write a ModelProto into the test's folder and return its path."""

    def _save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, path)
        return path

    return _save
