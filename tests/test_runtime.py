"""The one onnxruntime session factory: bounded threads, quiet logs, external data that
is read from the model's folder whatever the working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unittest.mock as mock
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.errors import OnnxcompError
from onnxcomp.io import model_io
from onnxcomp.io.data import input_specs, open_data
from onnxcomp.methods.int8.calibrate import collect
from onnxcomp.runtime import capture, latency
from onnxcomp.runtime import session as rt

ROOT = Path(__file__).resolve().parents[1]


def test_threads_are_capped_at_the_cpu_count() -> None:
    cpus = os.cpu_count() or 1
    assert rt.bounded_threads(10_000) == cpus
    assert rt.bounded_threads(1) == 1
    assert rt.bounded_threads(0) == 0  # onnxruntime's own default
    assert rt.session_options(threads=10_000).intra_op_num_threads == cpus
    assert rt.session_options(threads=10_000).inter_op_num_threads == 1
    with pytest.raises(OnnxcompError):
        rt.bounded_threads(-1)


def test_session_is_quiet_and_optimizes_as_asked(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_mlp(), path)
    sess = rt.make_session(path, threads=10_000, optimize=False)
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == (os.cpu_count() or 1)
    assert opts.log_severity_level == 3
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert sess.get_providers() == ["CPUExecutionProvider"]
    level = rt.make_session(path, optimize="basic").get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with pytest.raises(ValueError):
        rt.make_session(path, optimize="fastest")


# -- external data ------------------------------------------------------------------------

W1 = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
W2 = np.random.default_rng(1).standard_normal((32, 4)).astype(np.float32)


def _mlp() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["mm"], name="mm1"),
            helper.make_node("Relu", ["mm"], ["h"], name="relu"),
            helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _expected(x: np.ndarray) -> dict[str, np.ndarray]:
    h = np.maximum(x @ W1, 0)
    return {"h": h, "y": h @ W2}


X = np.random.default_rng(2).standard_normal((6, 16)).astype(np.float32)


@pytest.fixture
def external(tmp_path: Path, monkeypatch) -> Path:
    """A model whose weights live in ``weights.bin`` beside it, run from another folder
    that holds a decoy ``weights.bin`` of the same size (readable, wrong values)."""
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "mlp.onnx"
    onnx.save(_mlp(), path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    size = (folder / "weights.bin").stat().st_size
    np.full(size // 4, 0.5, np.float32).tofile(cwd / "weights.bin")
    monkeypatch.chdir(cwd)
    return path


def test_the_decoy_would_be_read_by_plain_bytes(external: Path) -> None:
    """The trap the factory avoids: onnxruntime resolves external data in bytes against
    the working directory."""
    blob = ir.to_proto(model_io.load(external)).SerializeToString()
    y = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    assert not np.allclose(y, _expected(X)["y"], atol=1e-4)


def _same(got: np.ndarray, name: str) -> None:
    np.testing.assert_allclose(got, _expected(X)[name], rtol=1e-5, atol=1e-4)


def test_every_model_form_reads_the_models_own_data(external: Path) -> None:
    loaded = model_io.load(external)
    assert os.path.abspath(Path.cwd()) != str(external.parent)
    blob = ir.to_proto(loaded).SerializeToString()
    proto = onnx.load(str(external), load_external_data=False)
    sessions = [
        rt.make_session(external),
        rt.make_session(str(external), extra_outputs=["h"]),
        rt.make_session(loaded),
        rt.make_session(loaded, extra_outputs=["h"]),
        rt.make_session(blob, base_dir=external.parent),
        rt.make_session(proto, base_dir=external.parent),
    ]
    for sess in sessions:
        _same(sess.run(["y"], {"x": X})[0], "y")


def test_a_loaded_model_names_its_folder_instead_of_reading_the_data_in(
    external: Path, monkeypatch
) -> None:
    def never(*args):
        raise AssertionError("read in")

    monkeypatch.setattr(rt, "_load_external", never)
    if rt._HAS_EXTERNAL_FOLDER:
        _same(rt.make_session(model_io.load(external)).run(None, {"x": X})[0], "y")


def test_data_files_in_two_folders(external: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(external.parent, other)
    loaded = model_io.load(external)
    second = model_io.load(other / external.name)
    loaded.graph.initializers["w2"].const_value = second.graph.initializers["w2"].const_value
    assert len(set(rt.external_folders(loaded).values())) == 2
    _same(rt.make_session(loaded).run(None, {"x": X})[0], "y")


def test_self_contained_bytes_without_the_folder_option(external: Path, monkeypatch) -> None:
    """onnxruntime too old for the external-folder option: the data is read in instead."""
    monkeypatch.setattr(rt, "_HAS_EXTERNAL_FOLDER", False)
    loaded = model_io.load(external)
    blob = ir.to_proto(loaded).SerializeToString()
    for sess in (rt.make_session(loaded), rt.make_session(blob, base_dir=external.parent)):
        _same(sess.run(["y"], {"x": X})[0], "y")


def test_capture_reads_the_models_own_data(external: Path) -> None:
    loaded = model_io.load(external)
    source = open_data([{"x": X[:3]}, {"x": X[3:]}], input_specs(loaded))
    got = {"h": [], "y": []}
    for _, values in capture.stream(loaded, ["h", "y"], source):
        for name in got:
            got[name].append(values[name])
    for name, parts in got.items():
        _same(np.concatenate(parts), name)


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_calibration_reads_the_models_own_data(external: Path, method: str) -> None:
    loaded = model_io.load(external)
    source = open_data([{"x": X}], input_specs(loaded))
    stats = collect(loaded, ["h", "y"], source, method=method, progress=False)
    for name in ("h", "y"):
        ref = _expected(X)[name]
        assert stats.tensors[name].min == pytest.approx(float(ref.min()), abs=1e-4)
        assert stats.tensors[name].max == pytest.approx(float(ref.max()), abs=1e-4)


def test_latency_session_reads_the_models_own_data(external: Path) -> None:
    sess = latency.session(external, threads=10_000)
    _same(sess.run(None, {"x": X})[0], "y")
    (stats,) = latency.compare_latency([sess], {"x": X}, runs=3, warmup=1)
    assert stats.runs == 3


def test_int8_bench_session_reads_the_models_own_data(external: Path) -> None:
    from onnxcomp.methods.int8.measure_step import _session

    _same(_session(model_io.load(external)).run(None, {"x": X})[0], "y")


def test_int8_measure_step_of_a_pruned_model_reads_its_own_data(external: Path) -> None:
    """Pruned, the float reference is serialized from memory: its external data must
    still come from the model's folder, not the decoy in the working directory."""
    from onnxcomp.pipeline.compress import CompressOptions, compress_model
    from onnxcomp.runtime import session as factory

    seen: list[str | None] = []
    real = factory.make_session

    def spy(model, **kw):
        if isinstance(model, bytes):
            seen.append(kw.get("base_dir"))
        return real(model, **kw)

    calib = external.parent / "calib.npz"
    np.savez(calib, x=X)
    options = CompressOptions(prune_sparsity=0.3, quantize="int8", calib=str(calib))
    model = model_io.load(external)
    with mock.patch.object(factory, "make_session", spy):
        compress_model(model, options, source=external)
    assert seen and all(b is not None and Path(b) == external.parent for b in seen)


# -- onnxruntime's log lines -----------------------------------------------------------------


@pytest.fixture
def noisy(tmp_path: Path) -> tuple[Path, Path]:
    """A model with an unused initializer (onnxruntime warns that it removes it)."""
    from model_builders import int8_conv_net as conv_net

    model = conv_net()
    unused = numpy_helper.from_array(np.ones((8, 8), np.float32), "unused_weight")
    model.graph.initializer.append(unused)
    path = tmp_path / "noisy.onnx"
    onnx.save(model, path)
    calib = tmp_path / "calib.npz"
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    np.savez(calib, x=x)
    return path, calib


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ONNXCOMP_TRACEBACK", None)
    cmd = [sys.executable, "-m", "onnxcomp", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("mode", ["int8", "weights"])
def test_no_onnxruntime_log_lines_on_stderr(noisy, tmp_path: Path, mode: str) -> None:
    path, calib = noisy
    out = tmp_path / f"out_{mode}.onnx"
    calibration = ("--calib", calib) if mode == "int8" else ()
    proc = _cli("compress", path, "-o", out, "--quantize", mode, *calibration, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" not in proc.stderr, proc.stderr
    assert out.exists()


def test_vv_lets_onnxruntime_warnings_through(noisy, tmp_path: Path) -> None:
    path, calib = noisy
    out = tmp_path / "out.onnx"
    args = ("-vv", "compress", path, "-o", out, "--quantize", "int8", "--calib", calib)
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[W:onnxruntime" in proc.stderr


def test_capture_only_keeps_the_nodes_the_names_need(external: Path) -> None:
    loaded = model_io.load(external)
    sess = capture.session(loaded, ["h"], only=True)
    assert [o.name for o in sess.get_outputs()] == ["h"]  # y and what only it reads: gone
    _same(capture.run(sess, ["h"], {"x": X})["h"], "h")


def test_capture_only_runs_whole_a_graph_onnx_ir_cannot_hold() -> None:
    """scikit-learn's ZipMap output (a sequence of maps) is no type onnx_ir holds: the
    capture runs the whole graph instead of failing (sklearn-digits under sparsegpt)."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["scores"]),
        helper.make_node("ZipMap", ["scores"], ["maps"], domain="ai.onnx.ml",
                         classlabels_int64s=[0, 1, 2]),
    ]  # fmt: skip
    maps = helper.make_value_info(
        "maps",
        helper.make_sequence_type_proto(
            helper.make_map_type_proto(
                TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
            )
        ),
    )
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])], [maps],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    x = np.ones((2, 4), np.float32)
    sess = capture.session(model, ["scores"], only=True)
    np.testing.assert_array_equal(capture.run(sess, ["scores"], {"x": x})["scores"], x @ w)
