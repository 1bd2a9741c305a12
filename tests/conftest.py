from __future__ import annotations

from pathlib import Path

import onnx
import pytest


@pytest.fixture(autouse=True)
def _own_measure_cache(tmp_path_factory, monkeypatch):
    """Each test measures for itself: no decision cached by another test (or by the
    user's own runs in ~/.cache) decides what a test builds."""
    monkeypatch.setenv("ONNXCOMP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def save_model(tmp_path):
    """Write a ModelProto into the test's folder and return its path."""

    def _save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, path)
        return path

    return _save


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The demo's digits MLP (model, calibration and test data), built once per run."""
    pytest.importorskip("sklearn")
    from onnxcomp.cli.demo import build_digits

    return build_digits(tmp_path_factory.mktemp("digits"))
