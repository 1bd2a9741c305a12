"""The README's first command: train the digits model, compress it, check it."""

from __future__ import annotations

import onnx

from onnxcomp.cli import main


def test_demo_builds_compresses_and_passes_its_check(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PASS: drop" in out and "accuracy" in out
    for name in ("digits.onnx", "digits_small.onnx", "digits_test.npz", "digits_calib.npz"):
        assert (tmp_path / name).exists()
    onnx.checker.check_model(str(tmp_path / "digits_small.onnx"), full_check=True)
    assert (tmp_path / "digits_small.onnx").stat().st_size < 0.3 * (
        tmp_path / "digits.onnx"
    ).stat().st_size
