"""Faults: kill -9, SIGTERM and a full disk leave the old output or the new one, whole,
and no temp folder once the next run has been (issue 15)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from model_builders import robust_fragile_model, write_data

from onnxcomp.cli import main
from onnxcomp.io import safe_io

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OLD = b"old bytes, not produced by this run"


def _seed(folder: Path, outputs: list[str]) -> None:
    folder.mkdir()
    onnx.save(robust_fragile_model(), folder / "m.onnx")
    write_data(folder / "d.npz", n=300)  # auto holds back a third: enough for a 5% budget
    for name in outputs:
        (folder / name).write_bytes(OLD + name.encode())


def _faults(tmp_path: Path, spec: dict) -> list[dict]:
    spec = dict(spec, seed=str(tmp_path / "seed"), work=str(tmp_path / "work"))
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{HERE}")
    proc = subprocess.run(
        [sys.executable, str(HERE / "fault_runner.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def _old(files: dict[str, str | None], tmp_path: Path) -> bool:
    import hashlib

    return all(
        h == hashlib.sha256((tmp_path / "seed" / n).read_bytes()).hexdigest()
        for n, h in files.items()
    )


def test_compress_killed_anywhere_leaves_old_or_new(tmp_path):
    out = "out.onnx"
    _seed(tmp_path / "seed", [out])
    spec = {
        "command": ["compress", "m.onnx", "-o", out, "--quantize", "weights"],
        "next": ["compress", "m.onnx", "-o", "next.onnx", "--prune-sparsity", "0.5"],
        "watch": [out],
        "random": 4,
        "signals": ["KILL", "TERM"],
        "seed_value": 15,
    }
    records = _faults(tmp_path, spec)
    reference, faults = records[0], records[1:]
    assert reference["code"] == 0 and reference["replaces"] >= 2
    new = reference["after"]["files"]
    assert len(faults) >= reference["replaces"] + 8
    for r in faults:
        files = r["after"]["files"]
        assert files == new or _old(files, tmp_path), r
        if r["scenario"]["signal"] == "TERM":  # cleaned up at once
            assert r["after"]["litter"] == [], r
            assert r["code"] in (0, 2), r
        assert r["next_code"] == 0, r
        assert r["after_next"]["litter"] == [], r
        after = r["after_next"]["files"]
        assert after == new or _old(after, tmp_path), r


def test_auto_outputs_land_as_one_unit(tmp_path):
    out = "out.onnx"
    names = [out, f"{out}.recipe.toml", f"{out}.report.json", f"{out}.report.md"]
    _seed(tmp_path / "seed", names)
    spec = {
        "command": [
            "auto",
            "m.onnx",
            "-o",
            out,
            "--data",
            "d.npz",
            "--max-drop",
            "0.1",  # verified on a held-back third by a bound: 0.05 rejects the one fit
            "--max-trials",
            "4",
            "--workers",
            "1",
        ],
        "next": ["compress", "m.onnx", "-o", "next.onnx", "--quantize", "weights"],
        "watch": names,
        "kill_last": 6,  # the publishing renames
        "random": 3,
        "signals": ["KILL", "TERM"],
        "seed_value": 15,
    }
    records = _faults(tmp_path, spec)
    reference, faults = records[0], records[1:]
    assert reference["code"] == 0
    new = reference["after"]["files"]

    def whole(files: dict) -> bool:
        if _old(files, tmp_path):
            return True
        same = all(files[n] == new[n] for n in names[:2])  # model and recipe: same bytes
        return (
            same
            and all(files[n] is not None for n in names[2:])
            and not any(_old({n: files[n]}, tmp_path) for n in names[2:])
        )

    for r in faults:
        assert r["after_next"]["litter"] == [], r
        assert whole(r["after_next"]["files"]), r
        if r["scenario"]["signal"] == "TERM":
            assert r["after"]["litter"] == [], r
            assert whole(r["after"]["files"]), r


def test_stale_folders_of_others_are_left_alone(tmp_path, monkeypatch):
    alive = safe_io.make_temp_dir(tmp_path)  # ours, and we are alive
    foreign = tmp_path / ".onnxcomp-not-ours"
    foreign.mkdir()
    with monkeypatch.context() as m:  # made by a process that is gone
        m.setattr(safe_io.os, "getpid", lambda: 2**22 + 12345)
        dead = safe_io.make_temp_dir(tmp_path)
    removed = safe_io.sweep_stale(tmp_path)
    assert removed == [dead]
    assert alive.exists() and foreign.exists()


def _auto_setup(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "m.onnx"
    onnx.save(robust_fragile_model(), src)
    write_data(tmp_path / "d.npz", n=300)  # auto holds back a third: enough for a 5% budget
    return src, tmp_path / "d.npz"


def test_full_disk_stops_auto_with_the_cause(capsys, tmp_path, monkeypatch):
    from onnxcomp.io import model_io

    src, data = _auto_setup(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.onnx"))

    monkeypatch.setattr(model_io, "_write", full)
    out = tmp_path / "o.onnx"
    argv = ["auto", src, "-o", out, "--data", data, "--max-drop", "0.05", "--workers", "1"]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.onnx"]


def test_full_disk_in_compress_is_exit_2(capsys, tmp_path, monkeypatch):
    from onnxcomp.io import model_io

    src, _ = _auto_setup(tmp_path)
    monkeypatch.setattr(
        model_io, "_write", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space"))
    )
    code = main(["compress", str(src), "-o", str(tmp_path / "o.onnx"), "--quantize", "weights"])
    err = capsys.readouterr().err
    assert code == 2 and "No space" in err and "internal" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.onnx"]


def test_recipe_calib_replays_from_another_folder(tmp_path, monkeypatch):
    """A recipe stores calib relative to itself; compress --recipe finds it from anywhere."""
    from onnxcomp.pipeline.compress import CompressOptions
    from onnxcomp.recipe import load_recipe, save_recipe

    work = tmp_path / "job"
    (work / "data").mkdir(parents=True)
    (work / "out").mkdir()
    np.savez(work / "data" / "c.npz", x=np.ones((4, 64), np.float32))
    monkeypatch.chdir(work)
    recipe = save_recipe(CompressOptions(quantize="int8", calib="data/c.npz"), "out/r.toml")
    assert '"../data/c.npz"' in recipe.read_text()
    monkeypatch.chdir(tmp_path)
    assert Path(load_recipe(work / recipe).calib).resolve() == (work / "data/c.npz").resolve()


def test_recipe_with_calib_replays_from_another_folder(tmp_path, monkeypatch):
    from onnxcomp.pipeline.compress import CompressOptions
    from onnxcomp.recipe import save_recipe

    src, _ = _auto_setup(tmp_path)
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    options = CompressOptions(quantize="int8", calib="d.npz", measure=False)
    recipe = save_recipe(options, tmp_path / "out" / "r.toml")  # as auto writes it
    assert 'calib = "../d.npz"' in recipe.read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compress", str(src), "--recipe", str(recipe), "-o", "r.onnx"]) == 0
    onnx.checker.check_model(str(elsewhere / "r.onnx"))
