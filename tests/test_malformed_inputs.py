"""Issue 29: malformed models, data and recipes are exit 2 with one line naming the
tensor, node or file, never an internal error; names are escaped; no third-party noise."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import conv_net, vin
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.cli import main


def _run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _exit2(capsys, needle: str, *args) -> None:
    code, _, err = _run(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("onnxcomp: error:"), err
    assert needle in lines[0], lines[0]


def _matmul(w: TensorProto, *, shape=("N", 4), opset: int = 17, extra=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", w.name], ["y"], name="mm")],
        "g",
        [vin("x", list(shape))],
        [vin("y", ["N", None])],
        [w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), *extra], ir_version=8
    )
    return model


def _raw(dims, data: bytes, dtype=TensorProto.FLOAT, name: str = "w") -> TensorProto:
    t = TensorProto(name=name, data_type=dtype)
    t.dims.extend(dims)
    t.raw_data = data
    return t


def _save(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


_BAD_TENSORS = {
    "raw_short": _raw([4, 3], b"\0" * 20),
    "float_data_short": TensorProto(
        name="w", data_type=TensorProto.FLOAT, dims=[4, 3], float_data=[1.0] * 5
    ),
    "dims_2e40": _raw([2**40, 1], b"\0" * 16),
    "dims_2e32_squared": _raw([2**32, 2**32], b"\0" * 16),
    "negative_dim": _raw([-4, 3], b"\0" * 48),
}


@pytest.mark.parametrize("case", sorted(_BAD_TENSORS))
@pytest.mark.parametrize("command", ["inspect", "compress"])
def test_tensor_data_not_matching_dims_is_exit_2(capsys, tmp_path, case, command):
    path = _save(tmp_path / "m.onnx", _matmul(_BAD_TENSORS[case]))
    argv = ["inspect", path] if command == "inspect" else ["compress", path, "-o", tmp_path / "o"]
    _exit2(capsys, "w", *argv, *(["--quantize", "weights"] if command == "compress" else []))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("batch", [2**40, 2**63 - 1])
def test_absurd_declared_batch_is_exit_2(capsys, tmp_path, batch):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    path = _save(tmp_path / "m.onnx", _matmul(w, shape=(batch, 4)))
    _exit2(capsys, "'x'", "check", path, path, "--runs", "1")


def test_zero_dim_int8_weight_is_not_an_internal_error(capsys, tmp_path):
    w = numpy_helper.from_array(np.zeros((0, 3), np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT, name="c"),
         helper.make_node("MatMul", ["x", "wf"], ["y"], name="mm")],
        "g", [vin("x", ["N", 0])], [vin("y", ["N", 3])], [w],
    )  # fmt: skip
    path = _save(tmp_path / "m.onnx", helper.make_model(graph, ir_version=8))
    for argv in (["inspect", path], ["compress", path, "-o", tmp_path / "o.onnx"]):
        code, _, err = _run(capsys, *argv)
        assert code in (0, 2), err
        assert "internal error" not in err


def test_duplicate_node_names_are_exit_2_or_fine(capsys, tmp_path):
    model = conv_net()
    for node in model.graph.node:
        node.name = "same"
    path = _save(tmp_path / "m.onnx", model)
    code, _, err = _run(
        capsys, "compress", path, "-o", tmp_path / "o.onnx", "--quantize", "weights"
    )
    assert code in (0, 2) and "internal error" not in err, err


@pytest.mark.parametrize(
    ("opsets", "needle"),
    [([helper.make_opsetid("", 99)], "opset 99"),
     ([helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)], "com.evil")],
)  # fmt: skip
def test_unsupported_opset_or_domain_is_exit_2(capsys, tmp_path, opsets, needle):
    model = conv_net()
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    if len(opsets) > 1:
        model.graph.node[0].domain = "com.evil"
    path = _save(tmp_path / "m.onnx", model)
    _exit2(capsys, needle, "compress", path, "-o", tmp_path / "o.onnx", "--quantize", "weights")


def test_external_data_shorter_than_declared_is_exit_2(capsys, tmp_path):
    w = numpy_helper.from_array(np.ones((64, 4), np.float32), "w")
    model = _matmul(w, shape=("N", 64))
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    with open(tmp_path / "w.bin", "r+b") as f:
        f.truncate(100)
    _exit2(capsys, "'w'", "inspect", tmp_path / "m.onnx")


# --- Constant nodes' external data -----------------------------------------------------------


def _constant_model(folder: Path, location: str) -> Path:
    value = numpy_helper.from_array(np.ones((4, 3), np.float32), "c")
    value.data_location = TensorProto.EXTERNAL
    value.ClearField("raw_data")
    value.external_data.add(key="location", value=location)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=value, name="const"),
         helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g", [vin("x", ["N", 4])], [vin("y", ["N", 3])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return _save(folder / "m.onnx", model)


def test_constant_external_data_naming_a_fifo_is_refused_without_blocking(tmp_path):
    import subprocess
    import sys

    os.mkfifo(tmp_path / "pipe")
    path = _constant_model(tmp_path, "pipe")
    proc = subprocess.run(
        [sys.executable, "-m", "onnxcomp", "inspect", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "FIFO" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("location", ["/etc/passwd", "../secret.bin"])
def test_constant_external_data_outside_the_folder_is_exit_2(capsys, tmp_path, location):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 48)
    path = _constant_model(home, location)
    for argv in (
        ["inspect", path],
        ["compress", path, "-o", home / "o.onnx", "--quantize", "weights"],
    ):
        _exit2(capsys, location, *argv)


# --- data files ----------------------------------------------------------------------------


@pytest.fixture
def small_model(tmp_path) -> Path:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    return _save(tmp_path / "m.onnx", _matmul(w))


def _npz_with_header(path: Path, shape: str, descr: str = "<f4", data: bytes = b"") -> Path:
    header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }"
    header = header.ljust(118) + "\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", blob)
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: _npz_with_header(p, "(68719476736,)"), "'x'"),  # 256 GiB declared
        (lambda p: _npz_with_header(p, "(-4, 4)"), "'x'"),
        (lambda p: np.savez(p, x=np.array([{"a": 1}] * 4, dtype=object)), "object"),
    ],
    ids=["256GiB", "negative-shape", "object-array"],
)
def test_malformed_npz_is_exit_2(capsys, tmp_path, small_model, make, needle):
    data = tmp_path / "d.npz"
    make(data)
    _exit2(capsys, needle, "check", small_model, small_model, "--data", data, "--runs", "1")


def test_npz_with_a_bad_crc_is_exit_2(capsys, tmp_path, small_model):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.arange(400, dtype=np.float32).reshape(100, 4))
    blob = bytearray(data.read_bytes())
    blob[200] ^= 0xFF  # inside the stored array: only the CRC sees it
    data.write_bytes(bytes(blob))
    _exit2(capsys, "d.npz", "check", small_model, small_model, "--data", data, "--runs", "1")


def test_test_data_file_with_a_bad_name_is_exit_2(capsys, tmp_path, small_model):
    folder = tmp_path / "td" / "test_data_set_0"
    folder.mkdir(parents=True)
    tensor = numpy_helper.from_array(np.ones((2, 4), np.float32), "x")
    (folder / "input_a.pb").write_bytes(tensor.SerializeToString())
    _exit2(capsys, "input_a.pb", "check", small_model, small_model, "--data", tmp_path / "td")


def test_test_data_external_data_outside_the_folder_is_refused(capsys, tmp_path, small_model,
                                                               monkeypatch):  # fmt: skip
    folder = tmp_path / "td" / "test_data_set_0"
    folder.mkdir(parents=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "secret_in_cwd.bin").write_bytes(np.ones(8, np.float32).tobytes())
    tensor = TensorProto(name="x", data_type=TensorProto.FLOAT, dims=[2, 4])
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="secret_in_cwd.bin")
    (folder / "input_0.pb").write_bytes(tensor.SerializeToString())
    monkeypatch.chdir(cwd)
    _exit2(capsys, "input_0.pb", "check", small_model, small_model, "--data", tmp_path / "td")


# --- recipes and options ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_recipe_nested_1000_deep_is_exit_2(capsys, tmp_path, small_model, suffix):
    recipe = tmp_path / f"r{suffix}"
    if suffix == ".json":
        recipe.write_text('{"version": 1, "compress": ' + "[" * 1000 + "]" * 1000 + "}")
    else:
        recipe.write_text("version = 1\n[compress]\nquantize = " + "[" * 1000 + "]" * 1000 + "\n")
    _exit2(capsys, "nest", "compress", small_model, "-o", tmp_path / "o.onnx", "--recipe", recipe)


@pytest.mark.parametrize("option", ["--workers", "--max-trials", "--seed"])
def test_huge_integer_options_are_exit_2(capsys, tmp_path, small_model, option):
    np.savez(tmp_path / "d.npz", x=np.ones((8, 4), np.float32))
    _exit2(capsys, option, "auto", small_model, "-o", tmp_path / "o.onnx", "--calib",
           tmp_path / "d.npz", "--max-drop", "0.1", option, str(2**64))  # fmt: skip


@pytest.mark.parametrize("length", [240, 250, 255])
def test_very_long_output_names_are_exit_2_or_written(capsys, tmp_path, small_model, length):
    out = tmp_path / ("o" * (length - 5) + ".onnx")
    code, _, err = _run(capsys, "compress", small_model, "-o", out, "--quantize", "weights")
    assert code in (0, 2) and "internal error" not in err, err
    html = tmp_path / ("h" * (length - 5) + ".html")
    code, _, err = _run(capsys, "check", small_model, small_model, "--runs", "1", "--html", html)
    assert code in (0, 2) and "internal error" not in err, err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- names and noise ----------------------------------------------------------------------


def _hostile_names_model() -> onnx.ModelProto:
    model = conv_net()
    model.graph.node[0].name = "conv\nonnxcomp: error: forged\x1b[31m\x07"
    return model


def test_control_characters_in_names_are_escaped(capsys, tmp_path):
    path = _save(tmp_path / "m.onnx", _hostile_names_model())
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((4, 3, 8, 8), "f4"))
    out = tmp_path / "o.onnx"
    runs = [
        ["inspect", path],
        ["compress", path, "-o", out, "--quantize", "weights"],
        ["check", path, out, "--data", tmp_path / "d.npz", "--runs", "1"],
        ["debug", path, out, "--data", tmp_path / "d.npz"],
    ]
    for argv in runs:
        code, stdout, err = _run(capsys, *argv)
        assert code in (0, 1), (argv, err)
        for text in (stdout, err):
            assert "\x1b" not in text and "\x07" not in text, argv
            assert not any(line.startswith("onnxcomp: error: forged") for line in
                           text.splitlines()), argv  # fmt: skip


def test_no_third_party_noise_unless_verbose(capsys, tmp_path):
    model = conv_net()
    model.graph.value_info.append(vin("bogus_not_in_graph", [3, 3]))
    path = _save(tmp_path / "m.onnx", model)
    np.savez(tmp_path / "d.npz", x=np.full((4, 3, 8, 8), 1e30, np.float32))  # overflow in numpy
    out = tmp_path / "o.onnx"
    for argv in (
        ["compress", path, "-o", out, "--quantize", "int8", "--calib", tmp_path / "d.npz"],
        ["check", path, out, "--data", tmp_path / "d.npz", "--runs", "1", "--json"],
    ):
        code, stdout, err = _run(capsys, *argv)
        assert code in (0, 1), err
        assert "Warning" not in err and "\x1b[" not in err, err
        if "--json" in argv:
            json.loads(stdout)


def test_non_utf8_file_name_is_read(capsys, tmp_path):
    name = os.fsdecode(b"mod\xe9l.onnx")
    path = _save(tmp_path / name, conv_net())
    code, _, err = _run(capsys, "inspect", path)
    assert code == 0, err


def test_graph_onnxruntime_rejects_is_exit_2_under_int8(capsys, tmp_path):
    """Fuzz find: an edge rewired so a Gemm's widths disagree passes onnx.checker, and
    onnxruntime's shape inference refuses it in calibration."""
    model = conv_net()
    model.graph.node[3].input[0] = "c1"
    path = _save(tmp_path / "m.onnx", model)
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3, 8, 8), np.float32))
    code, _, err = _run(capsys, "compress", path, "-o", tmp_path / "o.onnx", "--quantize",
                        "int8", "--calib", tmp_path / "d.npz")  # fmt: skip
    assert code in (0, 2) and "internal error" not in err, err
    assert len(err.strip().splitlines()) <= 1, err


def test_external_data_of_a_string_tensor_is_exit_2(tmp_path, capsys):
    """Found by `pytest -m fuzz`: a STRING tensor pointing at external data read as an
    internal error (onnx_ir has no byte width for strings)."""
    import onnx
    from onnx import TensorProto, helper

    from onnxcomp.cli import main

    (tmp_path / "w.bin").write_bytes(b"\0" * 64)
    t = helper.make_tensor("w", TensorProto.STRING, [2], [b"a", b"b"])
    t.ClearField("string_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", "0"), ("length", "16")):
        entry = t.external_data.add()
        entry.key, entry.value = k, v
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [t],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["inspect", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_a_data_type_onnx_does_not_define_is_exit_2(tmp_path, capsys):
    """Found by `pytest -m fuzz`: data_type 99 on an initializer was an internal error."""
    import onnx
    from onnx import TensorProto, helper

    from onnxcomp.cli import main

    t = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    t.data_type = 99
    for where in ("initializer", "constant"):
        nodes = [helper.make_node("Identity", ["x"], ["y"])]
        inits = [t]
        if where == "constant":
            nodes.insert(0, helper.make_node("Constant", [], ["c"], value=t))
            inits = []
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.save(model, tmp_path / "m.onnx")
        m = str(tmp_path / "m.onnx")
        assert main(["check", m, m, "--runs", "0"]) == 2, where
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("onnxcomp: error:"), where


def test_an_int32_conv_weight_is_exit_2_under_int8(capsys, tmp_path):
    """Fuzz find (`pytest -m fuzz`): a Conv weight retyped int32 passes onnx.checker and
    onnxruntime refuses it when the calibration session is made."""
    from onnx import TensorProto

    for rank in (4, 2):  # the Conv weight (InvalidGraph), the Gemm weight (Fail)
        model = conv_net()
        init = next(t for t in model.graph.initializer if len(t.dims) == rank)
        init.data_type = TensorProto.INT32
        init.raw_data = np.zeros(tuple(init.dims), np.int32).tobytes()
        path = _save(tmp_path / "m.onnx", model)
        np.savez(tmp_path / "d.npz", x=np.ones((4, 3, 8, 8), np.float32))
        code, _, err = _run(capsys, "compress", path, "-o", tmp_path / "o.onnx", "--quantize",
                            "int8", "--calib", tmp_path / "d.npz")  # fmt: skip
        assert code == 2 and "internal error" not in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_an_input_declared_with_batch_0_reads_npz_data(capsys, tmp_path):
    """Fuzz find (`pytest -m fuzz`): a declared batch of 0 (old exporters' "unknown")
    made the .npz reader step by 0 (an internal error)."""
    model = conv_net()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    path = _save(tmp_path / "m.onnx", model)
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3, 8, 8), np.float32))
    code, _, err = _run(capsys, "check", path, path, "--data", tmp_path / "d.npz", "--runs", "0")
    assert code in (0, 1, 2) and "internal error" not in err, err
