"""The benchmark harness end to end on a tiny model, so it cannot rot (no network)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

# benchmarks/ is a top-level folder of the repo, not part of the installed package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cli, runner, zoo, zoo_light
from benchmarks import zoo_transformer as zt
from benchmarks.worker import run_child
from benchmarks.zoo_minilm import WordPiece, read_safetensors

TINY = zt.BertConfig(layers=1, hidden=32, heads=2, ffn=64, vocab=100, seq=16, classes=4)


def _tiny(folder: Path) -> zoo.Built:
    path = folder / "tiny.onnx"
    onnx.save(zt.build_synthetic(TINY, seed=0), str(path))
    calib, evals = folder / "calib.npz", folder / "eval.npz"
    np.savez(calib, **zt.random_tokens(TINY, 4, seed=1))
    np.savez(evals, **zt.random_tokens(TINY, 8, seed=2))
    return zoo.Built("tiny", path, calib, evals, "logits")


@pytest.fixture
def tiny_zoo(monkeypatch):
    spec = zoo.ZooModel("tiny", "classifier", "test encoder", "random tokens", _tiny)
    monkeypatch.setitem(zoo.MODELS, "tiny", spec)


def test_harness_runs_end_to_end(tmp_path, tiny_zoo):
    out_json, out_md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    contenders = "onnxcomp-weights,ort-static-u8,ort-dynamic,nncf-ptq"
    args = ["--models", "tiny", "--contenders", contenders, "--threads", "1", "--runs", "3"]
    args += ["--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    args += ["--json", str(out_json), "--markdown", str(out_md)]
    code = cli.main(args)
    assert code == 0
    payload = json.loads(out_json.read_text())
    (entry,) = payload["results"]
    rows = entry["contenders"]
    assert set(rows) == set(contenders.split(","))
    for name in ("onnxcomp-weights", "ort-static-u8", "ort-dynamic"):
        row = rows[name]
        assert row["status"] == "ok", row
        assert 0 < row["size_ratio"] < 1
        assert row["peak_rss_mb"] > 0 and row["seconds"] >= 0
        assert row["fidelity"]["cosine"] > 0.5
        assert row["latency"]["1"]["speedup"] > 0
    # an optional peer that is missing gets a row saying so, not a gap
    if rows["nncf-ptq"]["status"] == "skipped":
        assert "not installed" in rows["nncf-ptq"]["error"]
    text = out_md.read_text()
    assert "## Summary per contender" in text and "### tiny" in text
    assert "python -m benchmarks --models tiny" in text
    # the Markdown can be rebuilt from the JSON alone
    out_md.unlink()
    assert cli.main(["--report-only", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    assert "### tiny" in out_md.read_text()


EXTENDED = [
    "onnxcomp-int8",
    "onnxcomp-gptq-int8",
    "onnxcomp-prune50-weights",
    "onnxcomp-prune50-sparsegpt",
    "onnxcomp-auto-size",
    "onnxcomp-auto-latency",
]


def test_recovery_and_auto_contenders(tmp_path, tiny_zoo):
    out_json, out_md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    args = ["--models", "tiny", "--contenders", ",".join(EXTENDED), "--threads", "1"]
    args += ["--runs", "3", "--auto-trials", "6", "--auto-time", "60"]
    args += ["--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    args += ["--json", str(out_json), "--markdown", str(out_md)]
    assert cli.main(args) == 0
    (entry,) = json.loads(out_json.read_text())["results"]
    rows = entry["contenders"]
    for name in EXTENDED[:4]:
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["peak_rss_mb"] > 0
    assert entry["auto_budget"].startswith("cosine drop <= 0.01")
    for name in EXTENDED[4:]:
        row = rows[name]
        # nothing within budget (or nothing faster) is a row saying so, not a crash
        assert row["status"] in ("ok", "no fit"), row
        extra = row["extra"]
        assert 1 <= extra["trials"] <= 6 and extra["seconds"] > 0
        if extra.get("global_model"):  # auto's best global setting is measured alongside
            assert rows[f"{name} (best global)"]["fidelity"]["cosine"] > 0.9
    text = out_md.read_text()
    assert "## auto vs the best single global setting" in text
    assert "| tiny | size (deflated) | cosine drop <= 0.01 |" in text
    assert "## Recovery: plain vs teacher-guided" in text
    assert "| tiny | int8 | cosine |" in text and "| tiny | 50% sparse + int8 weights |" in text


def test_extended_contenders_stay_on_their_models(tmp_path, tiny_zoo):
    cfg = runner.RunConfig(
        models=["tiny"], contenders=["onnxcomp-auto-size", "onnxcomp-gptq-int8"],
        cache=tmp_path / "cache", out=tmp_path / "out", threads=(), extended_models=("digits",),
    )  # fmt: skip
    (entry,) = runner.run(cfg)
    assert entry["contenders"] == {}
    assert entry["not_run"] == ["onnxcomp-auto-size", "onnxcomp-gptq-int8"]


def test_a_crashing_contender_becomes_a_failure_row(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not a model")
    result = run_child(
        "onnxcomp-weights", model, tmp_path / "o.onnx", tmp_path / "c.npz",
        timeout=120, log=tmp_path / "log",
    )  # fmt: skip
    assert result["ok"] is False and result["error"]
    assert "\n" not in result["error"]


def test_light_placeholders_become_standardised_weights(tmp_path):
    path = zoo_light.build_light("squeezenet", tmp_path)
    model = onnx.load(str(path))
    assert not [n for n in model.graph.node if n.op_type == "ConstantOfShape"]
    assert model.opset_import[0].version == zoo_light.TARGET_OPSET
    assert zoo_light.LOGITS in [o.name for o in model.graph.output]


def test_safetensors_reader_and_wordpiece():
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})
    raw = struct.pack("<Q", len(header)) + header.encode() + np.arange(4, dtype="<f4").tobytes()
    assert read_safetensors(raw)["w"].tolist() == [[0, 1], [2, 3]]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", ",", "cafe"]
    enc = WordPiece(vocab).encode(["Hello, worlds! Café"], seq=10)
    assert enc["input_ids"][0].tolist() == [2, 4, 7, 5, 6, 1, 8, 3, 0, 0]
    assert enc["attention_mask"][0].tolist() == [1] * 8 + [0] * 2
