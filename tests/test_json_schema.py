"""The JSON Schemas in onnxcomp/schemas/ describe what --json really prints."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_builders import robust_fragile_model, write_data

from onnxcomp.cli import main
from onnxcomp.errors import OnnxcompError
from onnxcomp.schemas import NAMES, load_schema

jsonschema = pytest.importorskip("jsonschema")


def _validator(command: str):
    schema = load_schema(command)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture
def models(tmp_path):
    src, small, data = tmp_path / "m.onnx", tmp_path / "s.onnx", tmp_path / "d.npz"
    onnx.save(robust_fragile_model(), src)
    write_data(data)
    return src, small, data


def _json(argv, capsys) -> tuple[int, dict]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_schemas_are_valid_and_shipped():
    for name in NAMES:
        _validator(name)
    with pytest.raises(OnnxcompError, match="no JSON schema"):
        load_schema("nope")


def test_compress_and_check_output_validates(models, capsys):
    src, small, data = models
    argv = ["compress", str(src), "-o", str(small), "--prune-sparsity", "0.5"]
    code, out = _json([*argv, "--quantize", "weights", "--json"], capsys)
    assert code == 0
    _validator("compress").validate(out)
    check = _validator("check")
    # with data and timing, gated and failing, and synthetic without timing (nulls)
    code, out = _json(["check", str(src), str(small), "--data", str(data), "--runs", "3",
                       "--max-drop", "0.5", "--json"], capsys)  # fmt: skip
    assert code == 0 and out["passed"]
    check.validate(out)
    code, out = _json(["check", str(src), str(small), "--runs", "0", "--max-drop", "0",
                       "--json"], capsys)  # fmt: skip
    assert code == 1 and out["passed"] is False and out["latency_original"] is None
    check.validate(out)


def test_codebook_int4_and_confidence_output_validates(models, tmp_path, capsys):
    """main's later features: --quantize codebook/int4 records and check --confidence."""
    from test_quantize_int4 import transformer_bits

    src, small, data = models
    compress_check = _validator("compress")
    argv = ["compress", str(src), "-o", str(small), "--quantize", "codebook", "--bits", "4"]
    code, out = _json([*argv, "--json"], capsys)
    assert code == 0 and out["quantized_to"] == "codebook (4-bit)"
    compress_check.validate(out)
    tsrc, tout = tmp_path / "t.onnx", tmp_path / "t4.onnx"
    onnx.save(transformer_bits(), tsrc)
    code, out = _json(["compress", str(tsrc), "-o", str(tout), "--quantize", "int4", "--json"],
                      capsys)  # fmt: skip
    assert code == 0 and out["quantized_to"].startswith("int4")
    assert any(r["bits"] == 4 for r in out["quantized"])
    compress_check.validate(out)
    code, out = _json(["check", str(src), str(small), "--data", str(data), "--runs", "0",
                       "--max-drop", "0.5", "--confidence", "0.9", "--json"], capsys)  # fmt: skip
    assert code == 0 and out["drop_bound"]["confidence"] == 0.9 and out["notes"]
    _validator("check").validate(out)


def test_the_schema_rejects_what_a_gate_could_not_read(models, capsys):
    src, small, _ = models
    main(["compress", str(src), "-o", str(small), "--quantize", "weights"])
    capsys.readouterr()
    _, out = _json(["check", str(src), str(small), "--runs", "0", "--json"], capsys)
    check = _validator("check")
    for broken in ({**out, "passed": "yes"}, {k: v for k, v in out.items() if k != "drop"}):
        assert not check.is_valid(broken)
    assert np.isfinite(out["size_ratio"])


def test_the_readme_ci_gate_runs_as_written(models, tmp_path, capsys, monkeypatch):
    """The GitHub Actions example's command, on a model pair: JSON valid, exit code = gate."""
    pytest.importorskip("plotly")
    src, small, data = models
    main(["compress", str(src), "-o", str(small), "--prune-sparsity", "0.9", "--quantize",
          "weights"])  # fmt: skip
    capsys.readouterr()
    x = np.load(data)["x"]
    w = onnx.numpy_helper.to_array  # labels: the original model's own argmax
    inits = {t.name: w(t) for t in onnx.load(src).graph.initializer}
    labels = np.argmax(x @ inits["robust"] @ inits["fragile"], axis=1)
    (tmp_path / "models").mkdir()
    np.savez(tmp_path / "models" / "test.npz", x=x, label=labels)
    (tmp_path / "models" / "model.onnx").write_bytes(src.read_bytes())
    (tmp_path / "models" / "model_int8.onnx").write_bytes(small.read_bytes())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    command = re.search(r"onnxcomp (check .*?) > check.json", block, re.S).group(1)
    argv = shlex.split(command.replace("\\\n", " "))
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    _validator("check").validate(out)
    assert out["max_drop"] == 0.01 and code == (0 if out["passed"] else 1)
    assert out["accuracy_original"] == 1.0 and (tmp_path / "check.html").exists()
