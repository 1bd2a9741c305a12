"""Progress (tqdm): a bar on a terminal only, silent under --quiet, JSON lines under --json."""

from __future__ import annotations

import io
import json

import onnx
import pytest
from model_builders import robust_fragile_model, write_data

from onnxcomp.cli import main
from onnxcomp.io import progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _default_mode():
    progress.set_mode("auto")
    yield
    progress.set_mode("auto")


def _drive(stream) -> None:
    bar = progress.bar(10, "calibrating", "samples", stream=stream)
    bar.update(4)
    bar.update(6)
    bar.close()


def test_a_bar_only_on_a_terminal():
    tty, plain = Tty(), io.StringIO()
    _drive(tty)
    _drive(plain)
    assert "calibrating" in tty.getvalue() and "10/10" in tty.getvalue()
    assert plain.getvalue() == ""


def test_quiet_and_disabled_are_silent_even_on_a_terminal():
    tty = Tty()
    progress.set_mode("off")
    _drive(tty)
    progress.set_mode("auto")
    bar = progress.bar(3, "x", stream=tty, enabled=False)
    bar.update(3)
    bar.close()
    assert tty.getvalue() == ""


def test_json_mode_writes_one_object_per_line():
    out = io.StringIO()
    progress.set_mode("json")
    _drive(out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines and lines[-1]["progress"] == "calibrating"
    assert lines[-1]["done"] == 10 and lines[-1]["total"] == 10


@pytest.fixture
def int8_job(tmp_path):
    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(robust_fragile_model(), src)
    write_data(data, n=64)
    return ["compress", str(src), "-o", str(tmp_path / "o.onnx"), "--quantize", "int8",
            "--calib", str(data), "--no-measure"]  # fmt: skip


def test_cli_json_progress_on_stderr_and_quiet(int8_job, capsys):
    assert main([*int8_job, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["output_bytes"] > 0  # stdout: the one JSON object
    events = [json.loads(x) for x in captured.err.splitlines() if x.startswith("{")]
    assert any(e["progress"] == "calibrating" and e["done"] == 64 for e in events)
    assert progress.get_mode() == "auto"  # reset when the command ends
    assert main(["-q", *int8_job, "--json"]) == 0
    assert '"progress"' not in capsys.readouterr().err


def test_auto_trial_lines_follow_the_mode(tmp_path, capsys):
    src, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(robust_fragile_model(), src)
    write_data(data, n=64)
    argv = ["auto", str(src), "-o", str(tmp_path / "a.onnx"), "--data", str(data),
            "--max-drop", "0.05", "--max-trials", "6", "--workers", "1",
            "--allow-small-data"]  # fmt: skip
    main([*argv, "--json"])
    captured = capsys.readouterr()
    json.loads(captured.out)
    events = [json.loads(x) for x in captured.err.splitlines()]  # every stderr line is JSON
    assert any(e["progress"] == "auto" and e["status"].startswith("trial 1/") for e in events)
    main(["-q", *argv])
    assert "trial" not in capsys.readouterr().err
