"""The benchmark harness end to end on a tiny model, so it cannot rot (no network)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

from benchmarks import cli, report, runner, zoo, zoo_light
from benchmarks import zoo_transformer as zt
from benchmarks.worker import run_child
from benchmarks.zoo_minilm import WordPiece, read_safetensors

TINY = zt.BertConfig(layers=1, hidden=32, heads=2, ffn=64, vocab=100, seq=16, classes=4)


def _tiny(folder: Path) -> zoo.Built:
    path = folder / "tiny.onnx"
    onnx.save(zt.build_synthetic(TINY, seed=0), str(path))
    calib, evals = folder / "calib.npz", folder / "eval.npz"
    np.savez(calib, **zt.random_tokens(TINY, 12, seed=1))  # auto holds back a third
    np.savez(evals, **zt.random_tokens(TINY, 8, seed=2))
    return zoo.Built("tiny", path, calib, evals, "logits")


@pytest.fixture
def tiny_zoo(monkeypatch):
    spec = zoo.ZooModel("tiny", "classifier", "test encoder", "random tokens", _tiny)
    monkeypatch.setitem(zoo.MODELS, "tiny", spec)


def test_harness_runs_end_to_end(tmp_path, tiny_zoo, monkeypatch):
    monkeypatch.setenv("ONNXCOMP_PEERS_CACHE", str(tmp_path / "peers"))  # no venv built
    monkeypatch.setenv("ONNXCOMP_PEERS_INSTALL", "0")
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
    # a peer whose venv is missing (installs off) gets a row saying so, not a gap
    assert rows["nncf-ptq"]["status"] == "skipped"
    assert "not installed" in rows["nncf-ptq"]["error"]
    text = out_md.read_text()
    assert "## Summary per contender" in text and "### tiny" in text
    assert "python -m benchmarks --models tiny" in text
    # the Markdown can be rebuilt from the JSON alone
    out_md.unlink()
    assert cli.main(["--report-only", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    assert "### tiny" in out_md.read_text()
    # a measured study kept in the JSON (title, text, tables) comes back as its own section
    payload = json.loads(out_json.read_text())
    payload["sections"] = [{"title": "Low-bit", "text": "`cmd`", "tables": [["| a |", "|---|"]]}]
    out_json.write_text(json.dumps(payload))
    assert cli.main(["--report-only", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    assert "## Low-bit\n\n`cmd`\n\n| a |\n|---|" in out_md.read_text()


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
    assert "| tiny | size (bytes) | cosine drop <= 0.01 |" in text
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


def _entry(seconds: float) -> dict:
    return {
        "status": "ok", "seconds": seconds, "peak_rss_mb": 100.0, "baseline_rss_mb": 50.0,
        "bytes": 50, "size_ratio": 0.5,
        "fidelity": {"cosine": 0.99, "top1_agreement": 1.0, "max_abs_error": 0.1, "samples": 4},
        "latency": {"1": {"median_ms": 1.0, "p90_ms": 1.2, "runs": 10, "speedup": 2.0}},
    }  # fmt: skip


def _run_payload(command: str, commit: str, contenders: dict, fp32_ms: float) -> dict:
    fp32 = {"bytes": 100, "latency": {"1": {"median_ms": fp32_ms, "p90_ms": fp32_ms, "runs": 10}}}
    model = {
        "model": "m", "kind": "classifier", "source": "s", "inputs": "i", "build_s": 0.0,
        "calib_samples": 4, "output": "y", "fp32": fp32, "auto_budget": None,
        "eval_samples": 4, "contenders": contenders, "total_s": 1.0,
    }  # fmt: skip
    return {
        "command": command,
        "date": f"date of {command}",
        "machine": dict(report.machine(), onnxcomp_commit=commit),
        "quick": False,
        "notes": [f"note of {command}"],
        "contenders": list(contenders),
        "descriptions": {c: c for c in contenders},
        "config": {"threads": [1]},
        "results": [model],
        "wall_s": 10.0,
    }


def test_merge_later_runs_win_per_model_and_contender(tmp_path) -> None:
    x1, y1, y2 = _entry(1.0), _entry(2.0), _entry(3.0)
    first = _run_payload("a", "c1", {"x": x1, "y": y1}, 5.0)
    second = _run_payload("b", "c2", {"y": y2}, 4.0)
    paths = []
    for i, payload in enumerate((first, second)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(payload))
    out, md = tmp_path / "merged.json", tmp_path / "merged.md"
    assert cli.main(["--merge", *map(str, paths), "--json", str(out), "--markdown", str(md)]) == 0
    merged = json.loads(out.read_text())
    entry = merged["results"][0]
    assert entry["contenders"] == {"x": x1, "y": y2}
    assert entry["fp32"]["latency"]["1"]["median_ms"] == 4.0
    assert merged["contenders"] == ["x", "y"] and merged["wall_s"] == 20.0
    assert merged["machine"]["onnxcomp_commit"] == "c1, c2"
    assert merged["command"] == "a ; then b" and "Merged from 2 runs" in merged["notes"][-1]
    assert md.read_text().startswith("#")


def test_benchmark_results_as_html(tmp_path):
    """`python -m benchmarks --html` draws the real-model and zoo figures offline."""
    pytest.importorskip("plotly")
    from benchmarks.report_html import write_html

    lat = {"latency_1t": {"median_ms": 2.0}}
    row = {"status": "ok", "drop": 0.01, "latency_1t": {"median_ms": 1.0}}
    payload = {
        "date": "today",
        "command": "python -m benchmarks",
        "notes": ["a note"],
        "real": [
            {"model": "m", "metric": "accuracy", "fp32": {"metric": 0.9, **lat},
             "contenders": {"onnxcomp-int8": row}},
        ],
        "results": [
            {"model": "z", "fp32": lat,
             "contenders": {"onnxcomp-int8": {**row, "fidelity": {"cosine": 0.99}}}},
        ],
        "contenders": ["onnxcomp-int8"],
    }  # fmt: skip
    out = write_html(payload, tmp_path / "bench.html")
    text = out.read_text()
    assert all(f'id="figure-{i}"' in text for i in (1, 2, 3, 4))
    assert "cdn." not in text.split("<body>")[1]  # plotly.js inlined in the head, no CDN


def test_quant_cost_table_ratios_and_geometric_mean():
    from benchmarks.quant_cost import table

    def run(seconds, peak, base=70.0, ok=True):
        return {"ok": ok, "seconds": seconds, "peak_rss_mb": peak, "baseline_rss_mb": base,
                "error": None if ok else "boom"}  # fmt: skip

    rows = [
        {"model": "a", "onnxcomp-int8": run(4.0, 170), "onnxcomp-int8-no-measure": run(1.0, 120),
         "ort-static-u8": run(2.0, 270)},
        {"model": "b", "onnxcomp-int8": run(8.0, 470), "onnxcomp-int8-no-measure": run(1.0, 95),
         "ort-static-u8": run(2.0, 170)},
        {"model": "c", "onnxcomp-int8": run(0, 0, ok=False), "onnxcomp-int8-no-measure": run(1, 80),
         "ort-static-u8": run(0, 0, ok=False)},
    ]  # fmt: skip
    lines = table(rows).splitlines()
    assert lines[2].startswith("| a | 4.0 s | 1.0 s | 2.0 s | 2.00x | 0.50x |")
    # net RSS: (120 - 70) / (270 - 70) = 0.25; gross: 170 / 270
    assert lines[2].endswith("| 0.63x | 0.25x |")
    assert "failed: boom" in lines[4] and lines[4].count("–x") == 4  # no ratio without ORT
    # geometric means over the models with both: time sqrt(2 * 4), RSS sqrt(170/270 * 470/170)
    assert lines[5] == "| geometric mean | | | | 2.83x | 0.50x | | | | 1.32x | 0.25x |"
