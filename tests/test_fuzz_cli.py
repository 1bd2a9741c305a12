"""Fuzz the loader and every command's options against the CLI contract (issue 15).

Whatever the bytes or the options: exit 0, 1 or 2 (3 only for a bug, and then still
one line); at most one line on stderr on failure and never a traceback; nothing written
when the command fails; the input and its external data untouched. Seeded and bounded
(derandomize, a fixed number of examples) so the suite stays deterministic and fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import conv_net, vin
from onnx import helper, numpy_helper

from onnxcomp.cli import main

pytest.importorskip("hypothesis")  # in the dev extra
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=int(os.environ.get("ONNXCOMP_FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
# Exit 3 is allowed by the contract for internal errors; ONNXCOMP_FUZZ_STRICT=1 makes it a
# failure, to find raw exceptions that should have been a user-facing message.
ALLOWED = {0, 1, 2} if os.environ.get("ONNXCOMP_FUZZ_STRICT") else {0, 1, 2, 3}


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder with a model (inline weights), one with external data, and data files."""
    root = tmp_path_factory.mktemp("fuzz")
    onnx.save(conv_net(), root / "m.onnx")
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [vin("x", ["N", 16])],
        [vin("y", ["N", 8])],
        [numpy_helper.from_array(w, "w")],
    )
    ext = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ext.ir_version = 8
    onnx.save(ext, root / "e.onnx", save_as_external_data=True, location="e.bin", size_threshold=0)
    np.savez(root / "d.npz", x=np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype("f4"))
    np.savez(root / "de.npz", x=np.ones((4, 16), np.float32))
    (root / "r.toml").write_text('version = 1\n[compress]\nquantize = "weights"\n')
    (root / "dir").mkdir()
    return root


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _assert_contract(code: int, err: str, argv: list[str]) -> None:
    if os.environ.get("ONNXCOMP_FUZZ_LOG"):
        with open(os.environ["ONNXCOMP_FUZZ_LOG"], "a") as f:
            f.write(f"{code}\t{argv!r}\t{err.strip()[:300]!r}\n")
    assert code in ALLOWED, (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code in (2, 3):
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (argv, err)
        assert lines[0].startswith("onnxcomp: "), (argv, err)


@contextlib.contextmanager
def _sandbox(corpus: Path):
    """A fresh copy of the corpus as the working folder; yields it."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        shutil.copytree(corpus, work)
        old = os.getcwd()
        os.chdir(work)
        try:
            yield work
        finally:
            os.chdir(old)


# --- the loader --------------------------------------------------------------------------

_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(
        st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8)
    ),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("replace"), st.binary(max_size=64)),
)


def _mutate(data: bytes, mutation) -> bytes:
    kind = mutation[0]
    if kind == "truncate":
        return data[: int(len(data) * mutation[1])]
    if kind == "flip":
        b = bytearray(data)
        for where, value in mutation[1]:
            b[min(int(where * len(b)), len(b) - 1)] = value
        return bytes(b)
    if kind == "insert":
        at = int(len(data) * mutation[1])
        return data[:at] + mutation[2] + data[at:]
    return mutation[1]


@FUZZ
@given(mutation=_mutation, command=st.sampled_from(["inspect", "compress", "check"]))
def test_loader_survives_mutated_models(corpus, mutation, command):
    with _sandbox(corpus) as work:
        bad = work / "bad.onnx"
        bad.write_bytes(_mutate((work / "m.onnx").read_bytes(), mutation))
        before = _digest(work)
        argv = {
            "inspect": ["inspect", "bad.onnx"],
            "compress": ["compress", "bad.onnx", "-o", "o.onnx", "--quantize", "weights"],
            "check": ["check", "m.onnx", "bad.onnx", "--runs", "1"],
        }[command]
        code, _, err = _run(argv)
        _assert_contract(code, err, argv)
        after = _digest(work)
        assert {k: v for k, v in after.items() if k in before} == before, argv
        if code != 0:
            assert set(after) == set(before), (argv, err)
        assert not [p for p in work.iterdir() if p.name.startswith(".onnxcomp")]


# --- options -----------------------------------------------------------------------------

_numbers = st.sampled_from(
    ["0", "1", "-1", "-5", "0.5", "0.999", "1.0", "2", "nan", "inf", "-inf", "1e309", "abc", "",
     "10000", "0x10", "true", "3.5"]
)  # fmt: skip
_paths = st.sampled_from(
    ["m.onnx", "e.onnx", "e.bin", "d.npz", "de.npz", "r.toml", "dir", "missing.onnx",
     "dir/nested.onnx", "o.onnx", "", "a\nb.onnx", "fifo"]
)  # fmt: skip
_words = st.sampled_from(["weights", "int8", "int4", "conv1", "Conv", "w", "fc", "", "x", "\n"])

_OPTIONS: dict[str, dict[str, st.SearchStrategy]] = {
    "compress": {
        "--prune-threshold": _numbers,
        "--prune-sparsity": _numbers,
        "--global": st.just(None),
        "--quantize": _words,
        "--per-tensor": st.just(None),
        "--calib": _paths,
        "--calib-method": st.sampled_from(["minmax", "percentile", "entropy", "mse", "x"]),
        "--percentile": _numbers,
        "--exclude": _words,
        "--recipe": _paths,
        "--no-measure": st.just(None),
        "--json": st.just(None),
    },
    "check": {
        "--data": _paths,
        "--labels": _words,
        "--runs": st.sampled_from(["0", "1", "-5", "abc", "2"]),
        "--threads": _numbers,
        "--max-drop": _numbers,
        "--json": st.just(None),
    },
    "debug": {"--top": _numbers, "--json": st.just(None)},
    "inspect": {"--json": st.just(None)},
    "auto": {
        "--max-drop": _numbers,
        "--time-limit": _numbers,
        "--workers": st.sampled_from(["0", "-3", "1", "abc", "1.5"]),
        "--max-trials": st.sampled_from(["0", "1", "2", "-1"]),
        "--objective": st.sampled_from(["size", "latency", "x"]),
        "--metric": _words,
        "--labels": _words,
        "--json": st.just(None),
    },
}
_POSITIONAL = {
    "compress": ["MODEL", "-o", "OUT"],
    "check": ["MODEL", "MODEL"],
    "debug": ["MODEL", "MODEL", "--data", "DATA"],
    "inspect": ["MODEL"],
    "auto": ["MODEL", "-o", "OUT", "--data", "DATA"],
}


@st.composite
def _argv(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(_OPTIONS)))
    model = draw(st.sampled_from(["m.onnx", "e.onnx", "missing.onnx", "dir", "d.npz", "fifo"]))
    data = "de.npz" if model == "e.onnx" else draw(st.sampled_from(["d.npz", "fifo", "dir"]))
    out = draw(_paths)
    argv = [command]
    for token in _POSITIONAL[command]:
        argv.append({"MODEL": model, "OUT": out, "DATA": data}.get(token, token))
    options = _OPTIONS[command]
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True)):
        value = draw(options[name])
        argv += [name] if value is None else [name, value]
    if command == "auto" and "--max-drop" not in argv:
        argv += ["--max-drop", "0.1"]
    if command == "auto" and "--workers" not in argv:
        argv += ["--workers", "1"]  # no process pool per example
    if command == "auto" and "--max-trials" not in argv:
        argv += ["--max-trials", "2"]
    if command == "check" and "--runs" not in argv:
        argv += ["--runs", "1"]
    return argv


@FUZZ
@given(argv=_argv())
def test_every_command_keeps_the_contract(corpus, argv):
    with _sandbox(corpus) as work:
        os.mkfifo(work / "fifo")
        before = _digest(work)
        code, _, err = _run(argv)
        _assert_contract(code, err, argv)
        after = _digest(work)
        # Inputs (and the external data file) untouched; on failure nothing new.
        out = argv[argv.index("-o") + 1] if "-o" in argv else None
        written = {out, f"{out}.recipe.toml", f"{out}.report.json", f"{out}.report.md"}
        for name, digest in before.items():
            if name not in written or code != 0:
                assert after.get(name) == digest, (argv, name, err)
        if code not in (0, 1):
            assert set(after) == set(before), (argv, err)
        assert (work / "fifo").exists() and not (work / "fifo").is_file()
        assert not [p for p in work.iterdir() if p.name.startswith(".onnxcomp")], argv


@FUZZ
@given(
    keep=st.integers(0, 600),
    location=st.sampled_from(
        [
            "e.bin",
            "/etc/hostname",
            "../e.bin",
            "dir",
            "fifo",
            "missing.bin",
            "d.npz",
            "./e.bin",
            "dir/../e.bin",
        ]
    ),
    offset=st.sampled_from([None, "0", "16", "-4", "999999", "x"]),
    command=st.sampled_from(["inspect", "compress", "check"]),
)
def test_external_data_fuzz(corpus, keep, location, offset, command):
    with _sandbox(corpus) as work:
        os.mkfifo(work / "fifo")
        with open(work / "e.bin", "r+b") as f:
            f.truncate(keep)
        model = onnx.load(work / "e.onnx", load_external_data=False)
        for init in model.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
            if offset is not None:
                init.external_data.add(key="offset", value=offset)
        onnx.save(model, work / "x.onnx")
        before = _digest(work)
        argv = {
            "inspect": ["inspect", "x.onnx"],
            "compress": ["compress", "x.onnx", "-o", "o.onnx", "--quantize", "weights"],
            "check": ["check", "x.onnx", "x.onnx", "--data", "de.npz", "--runs", "1"],
        }[command]
        code, _, err = _run(argv)
        _assert_contract(code, err, argv)
        after = _digest(work)
        assert {k: v for k, v in after.items() if k in before} == before, argv
        if code != 0:
            assert set(after) == set(before), (argv, err)
        assert not [p for p in work.iterdir() if p.name.startswith(".onnxcomp")]
