"""A bug is not bad input: exit 3, one line on stderr, the traceback in a log file."""

from __future__ import annotations

import pytest
from model_builders import conv_net

from onnxcomp.cli import inspect_cmd, main
from onnxcomp.errors import BudgetExceeded, OnnxcompError, clean, one_line


@pytest.fixture
def model_path(save_model):
    return save_model(conv_net())


def _raise(exc: BaseException):
    def broken(*args, **kwargs):
        raise exc

    return broken


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_internal_error_exit_3_one_line_and_a_log(monkeypatch, capsys, tmp_path, model_path):
    logs = tmp_path / "logs"
    monkeypatch.setenv("ONNXCOMP_LOG_DIR", str(logs))
    monkeypatch.delenv("ONNXCOMP_TRACEBACK", raising=False)
    message = "the tensor table is corrupt\nsecond line\n\tthird"
    monkeypatch.setattr(inspect_cmd, "inspect", _raise(RuntimeError(message)))
    code = main(["inspect", str(model_path)])
    err = capsys.readouterr().err
    assert code == 3
    (line,) = _lines(err)
    assert line.startswith("onnxcomp: internal error: RuntimeError: the tensor table is corrupt")
    assert "second line" not in line
    assert "Traceback" not in err
    (log,) = logs.glob("onnxcomp-*.log")
    assert str(log) in line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: the tensor table is corrupt" in text
    assert "in broken" in text  # the frame that raised
    assert "inspect" in text  # the command line


def test_internal_error_without_a_message(monkeypatch, capsys, tmp_path, model_path):
    monkeypatch.setenv("ONNXCOMP_LOG_DIR", str(tmp_path))
    monkeypatch.delenv("ONNXCOMP_TRACEBACK", raising=False)
    monkeypatch.setattr(inspect_cmd, "inspect", _raise(KeyError()))
    assert main(["inspect", str(model_path)]) == 3
    (line,) = _lines(capsys.readouterr().err)
    assert "internal error: KeyError (traceback in" in line


def test_unwritable_log_folder_still_one_line(monkeypatch, capsys, tmp_path, model_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ONNXCOMP_LOG_DIR", str(blocker / "logs"))  # under a file: fails
    monkeypatch.delenv("ONNXCOMP_TRACEBACK", raising=False)
    monkeypatch.setattr(inspect_cmd, "inspect", _raise(ValueError("boom")))
    assert main(["inspect", str(model_path)]) == 3
    (line,) = _lines(capsys.readouterr().err)
    assert "internal error: ValueError: boom" in line
    assert "ONNXCOMP_TRACEBACK=1" in line


def test_traceback_env_reraises(monkeypatch, model_path):
    monkeypatch.setenv("ONNXCOMP_TRACEBACK", "1")
    monkeypatch.setattr(inspect_cmd, "inspect", _raise(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        main(["inspect", str(model_path)])


@pytest.mark.parametrize(
    "exc, code", [(OnnxcompError("bad\ninput"), 2), (BudgetExceeded("over"), 1)]
)
def test_onnxcomp_errors_keep_their_code_on_one_line(monkeypatch, capsys, model_path, exc, code):
    monkeypatch.setattr(inspect_cmd, "inspect", _raise(exc))
    assert main(["inspect", str(model_path)]) == code
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith("onnxcomp: error: ")
    assert "internal error" not in line
    if code == 2:
        assert line == "onnxcomp: error: bad input"


def test_control_characters_become_spaces(monkeypatch, capsys, model_path):
    monkeypatch.setattr(inspect_cmd, "inspect", _raise(OnnxcompError("a\r\nb\x1b[2Jc\x00d")))
    assert main(["inspect", str(model_path)]) == 2
    err = capsys.readouterr().err
    assert err == "onnxcomp: error: a b [2Jc d\n"


def test_one_line_helper():
    assert one_line(ValueError("\n  first  \nsecond")) == "first"
    assert one_line(ValueError()) == "ValueError"
    assert one_line(ValueError("x" * 500)) == "x" * 300
    assert one_line("") == ""
    assert clean("tab\there\u2028next") == "tab here next"
