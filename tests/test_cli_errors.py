"""Bad input: one clear line on stderr, exit 2, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
from model_builders import conv_net
from onnx import helper

from onnxcomp.cli import main


@pytest.fixture
def model_path(save_model):
    return save_model(conv_net())


def _run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(err: str, needle: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxcomp: error:")
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_not_onnx(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model")
    before = _listing(tmp_path)
    code, _, err = _run(capsys, "compress", bad, "-o", tmp_path / "o.onnx", "--quantize", "weights")
    assert code == 2
    _assert_one_line_error(err, "bad.onnx")
    assert _listing(tmp_path) == before


def test_truncated(capsys, tmp_path, model_path):
    data = model_path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    code, _, err = _run(capsys, "inspect", cut)
    assert code == 2
    _assert_one_line_error(err, "cut.onnx")


def test_missing_file(capsys, tmp_path):
    code, _, err = _run(
        capsys,
        "compress",
        tmp_path / "nope.onnx",
        "-o",
        tmp_path / "o.onnx",
        "--quantize",
        "weights",
    )
    assert code == 2
    _assert_one_line_error(err, "no such file")


def test_output_equal_to_input(capsys, model_path):
    original = model_path.read_bytes()
    code, _, err = _run(capsys, "compress", model_path, "-o", model_path, "--quantize", "weights")
    assert code == 2
    _assert_one_line_error(err, "overwrite the input")
    assert model_path.read_bytes() == original


def test_missing_output_folder(capsys, tmp_path, model_path):
    code, _, err = _run(
        capsys, "compress", model_path, "-o", tmp_path / "no" / "o.onnx", "--quantize", "weights"
    )
    assert code == 2
    _assert_one_line_error(err, "does not exist")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prune-threshold", "-1"], "threshold"),
        (["--prune-threshold", "nan"], "threshold"),
        (["--prune-sparsity", "1.0"], "sparsity"),
        (["--prune-sparsity", "-0.1"], "sparsity"),
        (["--prune-sparsity", "0.5", "--prune-threshold", "0.1"], "not both"),
        (["--global", "--prune-threshold", "0.1"], "--global"),
        (["--calib", "x.npz", "--quantize", "weights"], "--calib"),
        (["--quantize", "int8"], "calibration data"),
        ([], "nothing to do"),
        (["--quantize", "int3"], "int3"),
        (["--prune-sparsity", "abc"], "abc"),
    ],
)
def test_bad_options(capsys, tmp_path, model_path, args, needle):
    out = tmp_path / "o.onnx"
    code, _, err = _run(capsys, "compress", model_path, "-o", out, *args)
    assert code == 2
    _assert_one_line_error(err, needle)
    assert not out.exists()


def test_model_failing_checker(capsys, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    bad = tmp_path / "invalid.onnx"
    onnx.save(helper.make_model(graph), bad)
    out = tmp_path / "o.onnx"
    code, _, err = _run(capsys, "compress", bad, "-o", out, "--quantize", "weights")
    assert code == 2
    _assert_one_line_error(err, "onnx.checker")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxcomp-")]


def test_unknown_option_is_one_line(capsys, model_path):
    code, _, err = _run(capsys, "compress", model_path, "--bogus")
    assert code == 2
    _assert_one_line_error(err, "--bogus")


def test_check_with_missing_input_array(capsys, tmp_path, model_path):
    import numpy as np

    data = tmp_path / "d.npz"
    np.savez(data, wrong=np.zeros((2, 3, 8, 8), np.float32))
    code, _, err = _run(capsys, "check", model_path, model_path, "--data", data)
    assert code == 2
    _assert_one_line_error(err, "no array for model input(s) x")


def test_real_process_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "onnxcomp", "inspect", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    _assert_one_line_error(proc.stderr, "bad.onnx")
