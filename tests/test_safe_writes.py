"""Issue 29: every file goes through one safe writer; temp folders, logs and workers
nobody else can steer. Each case of the issue built here and checked."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import conv_net, robust_fragile_model, vin, write_data
from onnx import helper, numpy_helper

from onnxcomp.cli import _write_log, main
from onnxcomp.io import safe_io, writer

pytest.importorskip("plotly")  # --html needs onnxcomp[report]


def _run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _exit2(capsys, needle: str, *args) -> str:
    code, _, err = _run(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("onnxcomp: error:"), err
    assert needle in lines[0], lines[0]
    return lines[0]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".onnxcomp"))


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path, Path]:
    """A model, its weight-quantized copy and data."""
    src = tmp_path / "m.onnx"
    onnx.save(conv_net(), src)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((4, 3, 8, 8), "f4"))
    out = tmp_path / "w.onnx"
    assert main(["compress", str(src), "-o", str(out), "--quantize", "weights"]) == 0
    return src, out, tmp_path / "d.npz"


@pytest.mark.parametrize("command", ["check", "debug"])
@pytest.mark.parametrize("target", ["original", "compressed", "data"])
def test_html_onto_an_input_is_refused_and_it_is_intact(capsys, pair, command, target):
    src, out, data = pair
    victim = {"original": src, "compressed": out, "data": data}[target]
    before = _sha(victim)
    capsys.readouterr()
    _exit2(capsys, "overwrite", command, src, out, "--data", data, "--html", victim)
    assert _sha(victim) == before
    assert _litter(src.parent) == []


def test_html_onto_the_inputs_external_data_is_refused(capsys, tmp_path):
    w = numpy_helper.from_array(np.ones((16, 8), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [vin("x", ["N", 16])], [vin("y", ["N", 8])], [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)  # fmt: skip
    before = _sha(tmp_path / "w.bin")
    m = tmp_path / "m.onnx"
    _exit2(capsys, "external data", "check", m, m, "--runs", "1", "--html", tmp_path / "w.bin")
    assert _sha(tmp_path / "w.bin") == before


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_html_onto_a_fifo_device_or_folder_is_refused(capsys, pair, tmp_path, kind):
    src, out, _ = pair
    target = {"fifo": tmp_path / "p.html", "device": Path("/dev/null"),
              "folder": tmp_path / "f.html"}[kind]  # fmt: skip
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    code, _, err = _run(capsys, "check", src, out, "--runs", "1", "--html", target)
    assert code == 2 and "Traceback" not in err, err
    mode = target.stat().st_mode
    assert {"fifo": stat.S_ISFIFO, "device": stat.S_ISCHR, "folder": stat.S_ISDIR}[kind](mode)


def test_html_keeps_the_mode_of_the_file_it_replaces(capsys, pair, tmp_path):
    src, out, _ = pair
    page = tmp_path / "r.html"
    page.write_text("old")
    page.chmod(0o600)
    code, _, err = _run(capsys, "check", src, out, "--runs", "1", "--html", page)
    assert code in (0, 1), err
    assert stat.S_IMODE(page.stat().st_mode) == 0o600 and page.read_text() != "old"


def test_full_disk_while_writing_html_leaves_nothing(capsys, pair, tmp_path, monkeypatch):
    src, out, _ = pair
    page = tmp_path / "r.html"
    page.write_text("old")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.os, "write", full)
    _exit2(capsys, "No space left", "check", src, out, "--runs", "1", "--html", page)
    assert page.read_text() == "old"
    assert _litter(tmp_path) == [] and not list(tmp_path.glob(".*tmp"))


def test_concurrent_writers_of_one_file_never_collide(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "note_written", lambda path: None)  # as if 8 processes
    target = tmp_path / "r.html"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            writer.write_file(target, f"run {i}\n" * 20_000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.reset()
    assert errors == []
    assert target.read_text().startswith("run ") and _litter(tmp_path) == []


def test_file_names_past_the_limit_are_exit_2(capsys, pair, tmp_path):
    src, out, _ = pair
    page = tmp_path / ("h" * 300 + ".html")
    _exit2(capsys, "too long", "check", src, out, "--runs", "1", "--html", page)


# --- auto ----------------------------------------------------------------------------------


@pytest.fixture
def auto_setup(tmp_path) -> tuple[Path, Path]:
    src = tmp_path / "m.onnx"
    onnx.save(robust_fragile_model(), src)
    write_data(tmp_path / "d.npz", n=120)
    return src, tmp_path / "d.npz"


_AUTO = ["--max-drop", "0.1", "--max-trials", "2", "--workers", "1", "--allow-small-data"]


@pytest.mark.parametrize("target", ["input", "output", "recipe"])
def test_auto_html_onto_its_input_or_outputs_is_refused_before_the_search(capsys, auto_setup,
                                                                         target):  # fmt: skip
    src, data = auto_setup
    out = src.parent / "o.onnx"
    victim = {"input": src, "output": out, "recipe": src.parent / "o.onnx.recipe.toml"}[target]
    before = _sha(src)
    t0 = time.monotonic()
    _exit2(capsys, "overwrite", "auto", src, "-o", out, "--data", data, *_AUTO, "--html", victim)
    assert time.monotonic() - t0 < 20 and _sha(src) == before
    assert sorted(p.name for p in src.parent.iterdir()) == ["d.npz", "m.onnx"]


@pytest.mark.parametrize("kind", ["fifo", "folder"])
@pytest.mark.parametrize("side", [".report.md", ".recipe.toml", ".report.json"])
def test_auto_side_file_that_is_a_fifo_or_folder_is_exit_2_before_work(capsys, auto_setup,
                                                                      kind, side):  # fmt: skip
    src, data = auto_setup
    out = src.parent / "o.onnx"
    target = src.parent / f"o.onnx{side}"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    _exit2(capsys, target.name, "auto", src, "-o", out, "--data", data, *_AUTO)
    assert not out.exists() and (target.is_dir() if kind == "folder" else target.is_fifo())


def test_auto_full_disk_on_html_publishes_nothing(capsys, auto_setup, monkeypatch):
    from onnxcomp.report import page

    src, data = auto_setup

    def full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(page.Page, "write", full)
    out = src.parent / "o.onnx"
    html = src.parent / "r.html"
    _exit2(capsys, "nothing written", "-q", "auto", src, "-o", out, "--data", data, *_AUTO,
           "--html", html)  # fmt: skip
    assert sorted(p.name for p in src.parent.iterdir()) == ["d.npz", "m.onnx"]


def test_auto_html_is_published_with_the_model(capsys, auto_setup):
    src, data = auto_setup
    out = src.parent / "o.onnx"
    html = src.parent / "r.html"
    code, _, err = _run(capsys, "auto", src, "-o", out, "--data", data, *_AUTO, "--html", html)
    assert code in (0, 1), err
    if code == 0:
        assert out.exists() and html.exists() and out.with_name("o.onnx.report.md").exists()
    assert _litter(src.parent) == []


# --- temp folders and logs ----------------------------------------------------------------


def test_planted_temp_folder_with_a_forged_manifest_moves_nothing(capsys, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    onnx.save(conv_net(), shared / "m.onnx")
    planted = shared / ".onnxcomp-planted"
    planted.mkdir(mode=0o700)
    (planted / "notes").write_text("attacker")
    (planted / safe_io.OWNER).write_text(json.dumps({"pid": 2**22 + 7, "started": "1",
                                                     "id": "0" * 64}))  # fmt: skip
    manifest = {"dest": str(tmp_path), "names": ["notes", "../notes.txt"]}
    (planted / safe_io.MANIFEST).write_text(json.dumps(manifest))
    code, _, err = _run(capsys, "compress", shared / "m.onnx", "-o", shared / "o.onnx",
                        "--quantize", "weights")  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "notes.txt").exists() and not (tmp_path / "notes").exists()
    assert not (shared / "notes").exists()
    assert (planted / "notes").read_text() == "attacker"  # not ours: never touched


def test_a_forged_or_foreign_folder_name_is_not_ours(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(safe_io.os, "getpid", lambda: 2**22 + 9)
        real = safe_io.make_temp_dir(tmp_path)  # ours, owner gone
    stem, mac = real.name.rsplit("-", 1)
    forged = tmp_path / f"{stem[:-1]}x-{mac}"  # another token, the same signature
    forged.mkdir(mode=0o700)
    loose = tmp_path / f"{real.name}-copy"
    loose.mkdir(mode=0o755)
    assert safe_io.sweep_stale(tmp_path) == [real]
    assert forged.exists() and loose.exists()


def test_internal_error_log_is_new_private_and_unpredictable(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXCOMP_LOG_DIR", str(tmp_path))
    victim = tmp_path / "victim"
    victim.write_text("keep")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (tmp_path / f"onnxcomp-{stamp}-{os.getpid()}.log").symlink_to(victim)  # the old name
    logs = {_write_log(RuntimeError("x"), ["inspect"]) for _ in range(3)}
    assert len(logs) == 3 and None not in logs
    for log in logs:
        assert log is not None and not log.is_symlink()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert victim.read_text() == "keep"


# --- workers ------------------------------------------------------------------------------


def test_workers_are_capped_at_the_cpu_count():
    from onnxcomp.auto.executor import worker_cap

    assert worker_cap(1000) <= (os.cpu_count() or 1) and worker_cap(1) == 1


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl parent-death signal")
def test_workers_die_with_a_killed_parent(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(robust_fragile_model(), src)
    write_data(tmp_path / "d.npz", n=120)
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxcomp", "auto", str(src), "-o", str(tmp_path / "o.onnx"),
         "--data", str(tmp_path / "d.npz"), "--max-drop", "0.1", "--workers", "2",
         "--max-trials", "40", "--allow-small-data"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            workers = {c for c in _children(proc.pid) if "spawn" in _cmdline(c)}
            if workers:
                break
            time.sleep(0.2)
        if not workers:
            pytest.skip("no worker started (one CPU, or the run ended first)")
        time.sleep(1.0)  # past the workers' start-up
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
        proc.stdout.read()  # end-of-file: nobody holds the pipe open
    finally:
        if proc.poll() is None:
            proc.kill()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
