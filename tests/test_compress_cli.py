"""`compress` from the command line: human lines and --json."""

from __future__ import annotations

import json

import onnx
from model_builders import conv_net

from onnxcomp.cli import main


def test_compress_prints_per_tensor_pruning(save_model, tmp_path, capsys):
    src = save_model(conv_net(zero_bias=True))
    out = tmp_path / "o.onnx"
    code = main(
        ["compress", str(src), "-o", str(out), "--prune-sparsity", "0.5", "--quantize", "weights"]
    )
    assert code == 0
    text = capsys.readouterr().out
    for name in ("w1", "wt", "wg"):
        assert f"pruned {name} " in text
    assert "dropped zero bias b1" in text
    assert "quantized 3 weights to int8 (3 per channel)" in text
    onnx.checker.check_model(str(out), full_check=True)


def test_compress_json(save_model, tmp_path, capsys):
    src = save_model(conv_net())
    out = tmp_path / "o.onnx"
    assert main(["compress", str(src), "-o", str(out), "--quantize", "weights", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output_path"] == str(out)
    assert 0 < report["size_ratio"] < 1
    assert {q["name"] for q in report["quantized"]} == {"w1", "wt", "wg"}


def test_exclude_keeps_a_layer_float(save_model, tmp_path, capsys):
    src = save_model(conv_net())
    out = tmp_path / "o.onnx"
    assert (
        main(
            [
                "compress",
                str(src),
                "-o",
                str(out),
                "--quantize",
                "weights",
                "--exclude",
                "ConvTranspose",
                "--exclude",
                "fc",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert [q["name"] for q in report["quantized"]] == ["w1"]
    assert report["skipped"] == {"wt": "excluded", "wg": "excluded"}
