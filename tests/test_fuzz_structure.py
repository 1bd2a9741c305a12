"""Structure-aware fuzzing (issue 29): built models mutated where parsers trust them
(dims, data lengths, dtypes, attributes, external-data entries, graph edges, input
shapes, opsets), npz files mutated in their headers and bytes, recipes generated with
odd keys, values and nesting. Every run must keep the CLI contract: exit 0, 1 or 2, one
stderr line on failure and no traceback, nothing written on failure, inputs untouched,
no byte from outside the folder in any output.

Seeded (derandomize) and bounded: the default suite runs a few examples of each (well
under a minute); ``pytest -m fuzz`` runs ``ONNXCOMP_FUZZ_LONG`` examples of each
(default 2,000) and ``ONNXCOMP_FUZZ_LOG=FILE`` records every (argv, exit, message).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import conv_net, mlp_with_constants, vin
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.cli import main

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SHORT = int(os.environ.get("ONNXCOMP_FUZZ_EXAMPLES", "25"))
LONG = int(os.environ.get("ONNXCOMP_FUZZ_LONG", "2000"))
CANARY = b"ONNXCOMP-CANARY-OUTSIDE-THE-FOLDER"


def _settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# --- the corpus -------------------------------------------------------------------------------


def _external_model() -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [vin("x", ["N", 16])],
        [vin("y", ["N", 8])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """``work/`` holds the models and data; a canary file and FIFO sit outside it."""
    root = tmp_path_factory.mktemp("structure")
    (root / "canary.bin").write_bytes(CANARY * 64)
    work = root / "work"
    work.mkdir()
    onnx.save(conv_net(), work / "conv.onnx")
    onnx.save(mlp_with_constants(), work / "mlp.onnx")
    onnx.save(
        _external_model(),
        work / "ext.onnx",
        save_as_external_data=True,
        location="ext.bin",
        size_threshold=0,
    )
    np.savez(work / "conv.npz", x=np.random.default_rng(1).standard_normal((4, 3, 8, 8), "f4"))
    np.savez(work / "mlp.npz", x=np.ones((4, 16), np.float32))
    np.savez(work / "ext.npz", x=np.ones((4, 16), np.float32))
    (work / "link.bin").symlink_to(root / "canary.bin")
    return root


@contextlib.contextmanager
def _sandbox(corpus: Path):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(corpus, root, dirs_exist_ok=True, symlinks=True)
        (root / "work" / "link.bin").unlink()
        (root / "work" / "link.bin").symlink_to(root / "canary.bin")
        os.mkfifo(root / "work" / "fifo")
        old = os.getcwd()
        os.chdir(root / "work")
        try:
            yield root / "work"
        finally:
            os.chdir(old)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


REACHED: set[tuple[int, str]] = set()


def _run_contract(work: Path, argv: list[str], inputs: set[str]) -> int:
    before = _files(work)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    prefix = lines[-1][:40] if lines else ""
    REACHED.add((code, prefix.split("/")[0] if "/" in prefix else prefix))
    if os.environ.get("ONNXCOMP_FUZZ_LOG"):
        with open(os.environ["ONNXCOMP_FUZZ_LOG"], "a") as f:
            f.write(json.dumps([code, argv, lines[-1][:300] if lines else ""]) + "\n")
    assert code in (0, 1, 2), (argv, code, text)
    assert "Traceback" not in text, (argv, text)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("onnxcomp: error:"), (argv, text)
    after = _files(work)
    for name in inputs:
        assert after.get(name) == before.get(name), (argv, name, "input changed")
    if code == 2:
        assert set(after) == set(before), (argv, text, "written on failure")
    for name, blob in after.items():
        assert CANARY not in blob, (argv, name, "bytes from outside the folder")
    assert (work / "fifo").is_fifo()
    assert not [p for p in work.iterdir() if p.name.startswith(".onnxcomp")], argv
    return code


# --- model mutations --------------------------------------------------------------------------

_DIMS = st.sampled_from([0, 1, 2, 3, -1, -(2**40), 2**31, 2**32, 2**40, 2**63 - 1])
_LOCATIONS = st.sampled_from(
    [
        "ext.bin",
        "../canary.bin",
        "/etc/hostname",
        "link.bin",
        "fifo",
        "missing.bin",
        "",
        "conv.npz",
        ".",
        "ext.bin\0x",
    ]
)
_OFFSETS = st.sampled_from([None, "0", "7", "-8", "99999999", "x", str(2**64)])


def _tensors(model: onnx.ModelProto) -> list[TensorProto]:
    out = list(model.graph.initializer)
    for node in model.graph.node:
        out += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return out


def _mutate_model(model: onnx.ModelProto, draw) -> None:
    kind = draw(
        st.sampled_from(
            ["dims", "data", "dtype", "attr", "external", "edge", "input", "opset", "float_data"]
        )
    )
    tensors = _tensors(model)
    t = tensors[draw(st.integers(0, len(tensors) - 1))] if tensors else None
    nodes = model.graph.node
    node = nodes[draw(st.integers(0, len(nodes) - 1))]
    if kind == "dims" and t is not None and t.dims:
        t.dims[draw(st.integers(0, len(t.dims) - 1))] = draw(_DIMS)
    elif kind == "data" and t is not None and t.HasField("raw_data"):
        cut = draw(st.integers(-64, 64))
        t.raw_data = t.raw_data[:cut] if cut < 0 else t.raw_data + b"\0" * cut
    elif kind == "float_data" and t is not None:
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * draw(st.integers(0, 40)))
    elif kind == "dtype" and t is not None:
        t.data_type = draw(st.sampled_from([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 21, 22, 99]))
    elif kind == "attr" and node.attribute:
        a = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        value = draw(st.sampled_from([0, -1, 2**31, -(2**62), 7]))
        if a.type == onnx.AttributeProto.INTS:
            a.ints[:] = [value] * draw(st.integers(0, 5))
        elif a.type == onnx.AttributeProto.INT:
            a.i = value
        else:
            a.type = draw(st.sampled_from([1, 2, 3, 7]))  # protobuf refuses 99 itself
    elif kind == "external" and t is not None:
        t.data_location = TensorProto.EXTERNAL
        t.ClearField("raw_data")
        del t.external_data[:]
        t.external_data.add(key="location", value=draw(_LOCATIONS))
        offset = draw(_OFFSETS)
        if offset is not None:
            t.external_data.add(key=draw(st.sampled_from(["offset", "length"])), value=offset)
    elif kind == "edge":
        names = [v for n in nodes for v in n.output] + ["nowhere", "", "x"]
        target = draw(st.sampled_from(names))
        if node.input and draw(st.booleans()):
            node.input[draw(st.integers(0, len(node.input) - 1))] = target
        elif node.output:
            node.output[0] = target
    elif kind == "input":
        shape = model.graph.input[0].type.tensor_type.shape
        if shape.dim:
            shape.dim[draw(st.integers(0, len(shape.dim) - 1))].dim_value = draw(_DIMS)
    elif kind == "opset":
        model.opset_import[0].version = draw(st.sampled_from([0, 1, 6, 12, 99, 2**40]))


_BUILT = {"conv": "conv.onnx", "mlp": "mlp.onnx", "ext": "ext.onnx"}
_ARGV = {
    "inspect": lambda m, d: ["inspect", m],
    "compress": lambda m, d: ["compress", m, "-o", "o.onnx", "--quantize", "weights"],
    "int8": lambda m, d: ["compress", m, "-o", "o.onnx", "--quantize", "int8", "--calib", d],
    "check": lambda m, d: ["check", m, m, "--data", d, "--runs", "1"],
}


def _model_body(corpus: Path, data) -> None:
    base = data.draw(st.sampled_from(sorted(_BUILT)))
    command = data.draw(st.sampled_from(sorted(_ARGV)))
    with _sandbox(corpus) as work:
        model = onnx.load(work / _BUILT[base], load_external_data=False)
        for _ in range(data.draw(st.integers(1, 3))):
            _mutate_model(model, data.draw)
        (work / "bad.onnx").write_bytes(model.SerializeToString())
        argv = [str(a) for a in _ARGV[command]("bad.onnx", f"{base}.npz")]
        _run_contract(work, argv, {"bad.onnx", "ext.bin", f"{base}.npz"})


@_settings(SHORT)
@given(data=st.data())
def test_mutated_models_keep_the_contract(corpus, data):
    _model_body(corpus, data)


@pytest.mark.fuzz
@_settings(LONG)
@given(data=st.data())
def test_mutated_models_long(corpus, data):
    _model_body(corpus, data)


# --- npz mutations ----------------------------------------------------------------------------


def _npz_blob(draw) -> bytes:
    shape = draw(
        st.sampled_from(
            [
                "(4, 3, 8, 8)",
                "(-4, 3, 8, 8)",
                "(2**40,)",
                "(68719476736,)",
                "()",
                "(4,)",
                "(4, 3, 8, 'a')",
                "[4]",
                "(0, 3, 8, 8)",
            ]
        )
    )
    descr = draw(st.sampled_from(["<f4", "|O", "<f8", "<i8", "|b1", "<U3", "x", "<f2", "V8"]))
    header = (
        "{'descr': '"
        + descr
        + "', 'fortran_order': "
        + draw(st.sampled_from(["False", "True", "1"]))
        + ", 'shape': "
        + shape
        + ", }"
    )
    header = header.ljust(118) + "\n"
    n = draw(st.sampled_from([0, 4, 768, 3072, 3073, 6144]))
    body = np.random.default_rng(n).standard_normal(n // 4 + 1).astype("f4").tobytes()[:n]
    blob = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + body
    if draw(st.booleans()):
        blob = blob[: draw(st.integers(0, len(blob)))]
    return blob


def _npz_body(corpus: Path, data) -> None:
    with _sandbox(corpus) as work:
        path = work / "bad.npz"
        member = data.draw(st.sampled_from(["x.npy", "x", "../x.npy", "y.npy", "x.npy.npy"]))
        compression = data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        with zipfile.ZipFile(path, "w", compression) as z:
            z.writestr(member, _npz_blob(data.draw))
        if data.draw(st.booleans()):  # flip bytes: a bad CRC, a broken directory
            blob = bytearray(path.read_bytes())
            for _ in range(data.draw(st.integers(1, 4))):
                blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
            path.write_bytes(bytes(blob))
        command = data.draw(st.sampled_from(["check", "int8", "debug"]))
        argv = {
            "check": ["check", "conv.onnx", "conv.onnx", "--data", "bad.npz", "--runs", "1"],
            "int8": [
                "compress",
                "conv.onnx",
                "-o",
                "o.onnx",
                "--quantize",
                "int8",
                "--calib",
                "bad.npz",
            ],
            "debug": ["debug", "conv.onnx", "conv.onnx", "--data", "bad.npz"],
        }[command]
        _run_contract(work, argv, {"bad.npz", "conv.onnx"})


@_settings(SHORT)
@given(data=st.data())
def test_mutated_npz_keep_the_contract(corpus, data):
    _npz_body(corpus, data)


@pytest.mark.fuzz
@_settings(LONG)
@given(data=st.data())
def test_mutated_npz_long(corpus, data):
    _npz_body(corpus, data)


# --- recipes ----------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "quantize",
        "prune-sparsity",
        "bits",
        "block-size",
        "exclude",
        "calib",
        "per-tensor",
        "unknown",
        "precision",
        "sparsity",
        "recover",
        "",
    ]
)
_SCALARS = st.one_of(
    st.sampled_from(["weights", "int8", "int4", "codebook", "x", "", "\n"]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.booleans(),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _recipe_body(corpus: Path, data) -> None:
    compress = data.draw(st.dictionaries(_KEYS, _VALUES, max_size=4))
    layers = data.draw(
        st.dictionaries(
            st.sampled_from(["w1", "mm1", "*", "nope"]),
            st.dictionaries(_KEYS, _VALUES, max_size=2),
            max_size=2,
        )
    )
    depth = data.draw(st.sampled_from([0, 0, 0, 5, 40, 1000]))
    version = data.draw(st.sampled_from([1, 1, 1, 2, "1", None]))
    as_json = data.draw(st.booleans())
    with _sandbox(corpus) as work:
        raw = {"version": version, "compress": compress, "layers": layers}
        if as_json:
            text = json.dumps(raw, default=str)
            if depth:
                text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
            path = work / "r.json"
        else:
            lines = [f"version = {_toml(version)}"] if version is not None else []
            lines += ["[compress]"] + [f"{json.dumps(k)} = {_toml(v)}" for k, v in compress.items()]
            for name, table in layers.items():
                lines += [f"[layers.{json.dumps(name)}]"]
                lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items()]
            if depth:
                lines.append("deep = " + "[" * depth + "]" * depth)
            text = "\n".join(lines) + "\n"
            path = work / "r.toml"
        path.write_text(text)
        model = data.draw(st.sampled_from(["conv.onnx", "mlp.onnx"]))
        argv = ["compress", model, "-o", "o.onnx", "--recipe", path.name]
        _run_contract(work, argv, {path.name, model})


@_settings(SHORT)
@given(data=st.data())
def test_generated_recipes_keep_the_contract(corpus, data):
    _recipe_body(corpus, data)


@pytest.mark.fuzz
@_settings(LONG)
@given(data=st.data())
def test_generated_recipes_long(corpus, data):
    _recipe_body(corpus, data)


def test_fuzz_reached_distinct_outcomes():
    """The short runs above reached many different outcomes, not one refusal."""
    if len(REACHED) == 0:
        pytest.skip("fuzz tests did not run in this session")
    assert len(REACHED) >= 5, REACHED
