"""The peer contenders' plumbing without any peer installed: venv pins and markers, the
runner-script protocol (a stand-in peer that copies the model), result parsing, the
transformer test, contender selection and the RESULTS.md section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks import cli, zoo
from benchmarks import zoo_transformer as zt
from benchmarks.contenders import CONTENDERS, Contender, _in_peer_venv
from benchmarks.peers import ENVS, PEER_CONTENDERS, Peer, is_transformer
from benchmarks.peers import report as peer_report
from benchmarks.peers.run import config_for, parse_result, run_peer, unavailable
from benchmarks.peers.venv import MARKER, PeerEnv, PeerUnavailable, install_error

TINY = zt.BertConfig(layers=1, hidden=32, heads=2, ffn=64, vocab=100, seq=16, classes=4)

COPY_PEER = """
import shutil, sys
sys.path.insert(0, {scripts!r})
from _common import main

def quantize(src, out, feeds, cfg):
    if cfg.get("fail"):
        raise ValueError("boom\\nsecond line")
    shutil.copy(src, out)
    return {{"feeds": len(feeds)}}

if __name__ == "__main__":
    if {die!r}:
        print("fatal: cannot start")
        sys.exit(3)
    sys.exit(main(quantize, ("numpy",)))
"""


def _mlp(path: Path) -> Path:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.ones(12, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _fake_env(root: Path, monkeypatch) -> PeerEnv:
    """A built 'venv' whose python is this interpreter (so no install ever happens)."""
    monkeypatch.setenv("ONNXCOMP_PEERS_CACHE", str(root))
    env = PeerEnv("fake", "fake-peer", "0.1", ())
    (env.root / "bin").mkdir(parents=True)
    env.python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    env.python.chmod(0o755)
    meta = {"pins": env.pins(), "versions": {"fake-peer": "0.1"}}
    (env.root / MARKER).write_text(json.dumps(meta))
    return env


def _register(monkeypatch, tmp_path: Path, env: PeerEnv, *, die: bool = False, **cfg) -> str:
    from benchmarks.peers import SCRIPTS

    script = tmp_path / f"copy_peer_{len(cfg)}_{die}.py"
    script.write_text(COPY_PEER.format(scripts=str(SCRIPTS), die=die))
    name = "fake-peer"
    monkeypatch.setitem(PEER_CONTENDERS, name, ("copies", Peer(env, str(script), cfg), False))
    monkeypatch.setitem(
        CONTENDERS, name, Contender(name, "fake", "copies", _in_peer_venv, peer=True)
    )
    return name


def test_every_peer_is_pinned_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXCOMP_PEERS_CACHE", str(tmp_path))
    for env in ENVS.values():
        assert all("==" in pin for pin in env.pins()), env
        assert env.root == tmp_path / f"{env.name}-{env.version}"
    for name, (_, peer, _) in PEER_CONTENDERS.items():
        assert peer.script_path.exists(), name
        assert CONTENDERS[name].peer


def test_marker_decides_whether_a_venv_is_built(tmp_path, monkeypatch):
    env = _fake_env(tmp_path, monkeypatch)
    assert env.ensure(install=False)["versions"] == {"fake-peer": "0.1"}
    stale = PeerEnv("fake", "fake-peer", "0.1", ("onnx==1.0",))  # other pins, same folder
    assert stale.marker() is None
    with pytest.raises(PeerUnavailable, match="not installed"):
        stale.ensure(install=False)


def test_install_error_is_pips_first_error_line():
    stderr = "WARNING: Location 'x' is ignored\nERROR: No matching distribution for y==9\nmore"
    assert install_error(stderr) == "ERROR: No matching distribution for y==9"
    assert install_error("") == "no output"


def test_a_peer_runs_in_its_venv_and_reports_time_and_memory(tmp_path, monkeypatch):
    env = _fake_env(tmp_path / "cache", monkeypatch)
    name = _register(monkeypatch, tmp_path, env)
    _mlp(tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.ones((5, 4), np.float32))
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    monkeypatch.chdir(tmp_path)  # relative paths, as a relative --cache gives
    res = run_peer(
        name,
        Path("m.onnx"),
        Path("out/q.onnx"),
        Path("calib.npz"),
        timeout=120,
        log=tmp_path / "q.log",
    )
    assert res["ok"] and out.exists(), res
    assert res["extra"]["feeds"] == 5 and res["extra"]["venv"] == {"fake-peer": "0.1"}
    assert res["seconds"] >= 0 and res["cpu_s"] >= 0 and res["peak_rss_mb"] > 0
    assert {"load_before", "load_after", "versions"} <= set(res)


def test_peer_failures_are_one_line(tmp_path, monkeypatch):
    env = _fake_env(tmp_path / "cache", monkeypatch)
    src = _mlp(tmp_path / "m.onnx")
    calib = tmp_path / "calib"  # a folder of feeds, as the corpus has
    calib.mkdir()
    np.savez(calib / "0.npz", x=np.ones((1, 4), np.float32))
    out = tmp_path / "q.onnx"
    name = _register(monkeypatch, tmp_path, env, fail=True)
    res = run_peer(name, src, out, calib, timeout=120, log=tmp_path / "q.log")
    assert not res["ok"] and res["error"] == "ValueError: boom"
    name = _register(monkeypatch, tmp_path, env, die=True)
    res = run_peer(name, src, out, calib, timeout=120, log=tmp_path / "q.log")
    assert res["error"] == "runner died (exit 3): fatal: cannot start"


def test_parse_result_without_json_reads_the_log(tmp_path):
    log = tmp_path / "log"
    log.write_text("Traceback...\nImportError: no module named quark\n\n")
    res = parse_result(tmp_path / "none.json", log, 1)
    assert res == {"ok": False, "error": "runner died (exit 1): ImportError: no module named quark"}


def test_uninstalled_peer_is_skipped_when_installs_are_off(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXCOMP_PEERS_CACHE", str(tmp_path))
    monkeypatch.setenv("ONNXCOMP_PEERS_INSTALL", "0")
    assert "not installed" in unavailable("nncf-ptq")
    assert "not installed" in CONTENDERS["aimet-int8"].unavailable()


def test_transformer_detection_and_nncf_preset(tmp_path):
    bert = tmp_path / "bert.onnx"
    onnx.save(zt.build_synthetic(TINY, seed=0), str(bert))
    mlp = _mlp(tmp_path / "mlp.onnx")
    assert is_transformer(bert) and not is_transformer(mlp)
    _, peer, _ = PEER_CONTENDERS["nncf-accuracy"]
    assert config_for(peer, bert)["model_type"] == "transformer"
    assert config_for(peer, mlp)["model_type"] is None
    assert "not a transformer" in unavailable("nncf-ptq-transformer", mlp)


def test_peers_are_opt_in():
    default = cli._contenders(cli.parse([]))
    assert not any(CONTENDERS[n].peer for n in default)
    with_peers = cli._contenders(cli.parse(["--peers"]))
    assert "nncf-ptq" in with_peers and "quark-xint8" in with_peers
    assert "quark-s8s8-adaround" not in with_peers  # slow: only when named
    named = cli._contenders(cli.parse(["--contenders", "onnxcomp-int8,quark-s8s8-adaround"]))
    assert named == ["onnxcomp-int8", "quark-s8s8-adaround"]


def _tiny(folder: Path) -> zoo.Built:
    path = folder / "tiny.onnx"
    onnx.save(zt.build_synthetic(TINY, seed=0), str(path))
    calib, evals = folder / "calib.npz", folder / "eval.npz"
    np.savez(calib, **zt.random_tokens(TINY, 6, seed=1))
    np.savez(evals, **zt.random_tokens(TINY, 6, seed=2))
    return zoo.Built("tiny", path, calib, evals, "logits")


def test_harness_measures_a_peer_beside_onnxcomp(tmp_path, monkeypatch):
    env = _fake_env(tmp_path / "cache", monkeypatch)
    name = _register(monkeypatch, tmp_path, env)
    monkeypatch.setitem(
        zoo.MODELS, "tiny", zoo.ZooModel("tiny", "classifier", "test", "random tokens", _tiny)
    )
    out_json, out_md = tmp_path / "r.json", tmp_path / "R.md"
    args = ["--models", "tiny", "--contenders", f"onnxcomp-weights,{name}", "--threads", "1"]
    args += ["--runs", "5", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    assert cli.main([*args, "--json", str(out_json), "--markdown", str(out_md)]) == 0
    (entry,) = json.loads(out_json.read_text())["results"]
    row = entry["contenders"][name]
    assert row["status"] == "ok" and row["valid"] == "ok", row
    assert row["fidelity"]["top1_agreement"] == 1.0  # a copy of fp32
    lat = row["latency"]["1"]
    assert lat["paired_speedup"] > 0 and lat["cpu_median_ms"] > 0
    text = out_md.read_text()
    assert "## Peers: NNCF, AMD Quark and aimet-onnx" in text and f"| {name} |" in text


def test_verdict_reads_metric_first_then_speed():
    entry = {"real": True, "metric": "accuracy", "fp32": {"latency_1t": {"median_ms": 10.0}}}

    def row(metric: float, paired: float) -> dict:
        lat = {"median_ms": 10.0 / paired, "paired_speedup": paired}
        return {"status": "ok", "metric": metric, "drop": 0.9 - metric, "latency_1t": lat}

    assert peer_report.verdict(entry, row(0.90, 2.0), row(0.80, 3.0)).startswith("ours better")
    assert "peer better by 0.100" in peer_report.verdict(entry, row(0.80, 3.0), row(0.90, 1.0))
    assert peer_report.verdict(entry, row(0.90, 2.0), row(0.898, 1.5)) == "tie, ours faster"
    assert "peer faster (1.50x ours)" in peer_report.verdict(entry, row(0.9, 1.0), row(0.9, 1.5))
    assert peer_report.verdict(entry, {"status": "failed"}, row(0.9, 1.0)) == "ours failed"
    entry["contenders"] = {"onnxcomp-int8": row(0.9, 2.0), "p": row(0.85, 1.0)}
    assert peer_report.best_peer(entry, {"p"})[0] == "p"


def test_validity_flags_an_output_of_another_shape(tmp_path):
    from benchmarks.validity import validity

    ref = _mlp(tmp_path / "ref.onnx")
    model = onnx.load(str(ref))
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1, -1])
    model.graph.initializer.append(shape)
    model.graph.node[0].output[0] = "y0"
    model.graph.node.append(helper.make_node("Reshape", ["y0", "s"], ["y"]))
    flat = tmp_path / "flat.onnx"
    onnx.save(model, str(flat))
    feed = {"x": np.ones((2, 4), np.float32)}
    assert validity(ref, ref, feed) == "ok"
    assert validity(flat, ref, feed) == "outputs: y (1, 6) vs fp32 (2, 3)"
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert validity(tmp_path / "bad.onnx").startswith("checker: ")


def test_merge_keeps_corpus_entries_and_peer_pins(tmp_path):
    from benchmarks.merge import merge_runs

    base = {"machine": {}, "contenders": [], "config": {}, "results": [], "date": "d"}
    a = base | {"command": "a", "real": [{"model": "m1", "n": 1}, {"model": "m2", "n": 1}]}
    b = base | {"command": "b", "real": [{"model": "m2", "n": 2}], "peer_pins": {"nncf": ["x"]}}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, run in zip(paths, (a, b), strict=True):
        path.write_text(json.dumps(run))
    merged = merge_runs(paths)
    assert merged["real"] == [{"model": "m1", "n": 1}, {"model": "m2", "n": 2}]
    assert merged["peer_pins"] == {"nncf": ["x"]}


def test_log_error_finds_a_logged_error(tmp_path):
    from benchmarks.peers.run import log_error

    log = tmp_path / "log"
    log.write_text("ok\n\x1b[31m[QUARK-ERROR]: Failed to create inference session\x1b[0m\nlater\n")
    assert log_error(log) == "[QUARK-ERROR]: Failed to create inference session"
    log.write_text("fine\n")
    assert log_error(log) == "no error in its log"
