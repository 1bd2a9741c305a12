"""Run one peer contender: make sure its venv exists, start its runner script there with
the model, the calibration feeds and the output path, and read back the same result a
``benchmarks.worker`` child reports (ok / error, seconds, CPU seconds, peak RSS)."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import time
from pathlib import Path

from benchmarks.peers import PEER_CONTENDERS, Peer, is_transformer
from benchmarks.peers.venv import PeerUnavailable


def installs_allowed() -> bool:
    """``--no-peer-install`` (or ONNXCOMP_PEERS_INSTALL=0) keeps to venvs already built."""
    return os.environ.get("ONNXCOMP_PEERS_INSTALL", "1") != "0"


def unavailable(name: str, src: Path | None = None) -> str | None:
    """Why this peer contender cannot run (on this model), or None."""
    _, peer, _ = PEER_CONTENDERS[name]
    if not installs_allowed() and peer.env.marker() is None:
        return f"{peer.env.package}=={peer.env.version} not installed (peer installs disabled)"
    if src is not None and peer.transformer_only and not is_transformer(src):
        return "not a transformer (no attention MatMul + Softmax)"
    return None


def memory_cap_bytes() -> int:
    """The peer process's data-segment limit (ONNXCOMP_PEERS_MEM_GB, default 12 GB).

    Quark's XINT8 calibration took magika past 20 GB and the kernel's OOM killer then picks
    any large process on the machine; with the cap the peer alone fails, with MemoryError."""
    return int(float(os.environ.get("ONNXCOMP_PEERS_MEM_GB", "12")) * 2**30)


def _limit_memory() -> None:  # runs in the child before exec
    cap = memory_cap_bytes()
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))


def config_for(peer: Peer, src: Path) -> dict:
    """The script's config; ``model_type: auto`` becomes the transformer preset where
    the model has attention, NNCF's default elsewhere."""
    cfg = dict(peer.config)
    if cfg.get("model_type") == "auto":
        cfg["model_type"] = "transformer" if is_transformer(src) else None
    return cfg


def command(peer: Peer, src: Path, out: Path, calib: Path, result: Path, cfg: dict) -> list[str]:
    script = [str(peer.script_path), str(src), str(out), str(calib), str(result)]
    return [str(peer.env.python), *script, json.dumps(cfg)]


def parse_result(result_path: Path, log: Path, returncode: int | None) -> dict:
    """The script's result JSON, or why there is none (the log's last line)."""
    if result_path.exists():
        return json.loads(result_path.read_text())
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    last = tail[-1].strip()[:200] if tail else "no output"
    return {"ok": False, "error": f"runner died (exit {returncode}): {last}"}


def log_error(log: Path) -> str:
    """The first line of a peer's log that reports an error, colour codes stripped."""
    for line in log.read_text(errors="replace").splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if re.search(r"\bERROR\b|Error:", line):
            return line[:200]
    return "no error in its log"


def run_peer(name: str, src: Path, out: Path, calib: Path, *, timeout: float, log: Path) -> dict:
    """One compression by a peer in its venv; never raises for the peer's failures."""
    _, peer, _ = PEER_CONTENDERS[name]
    src, out, calib = src.resolve(), out.resolve(), calib.resolve()  # the script runs elsewhere
    result_path = out.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    log.write_text("")
    try:
        meta = peer.env.ensure(install=installs_allowed(), log=log)
    except (PeerUnavailable, OSError, subprocess.SubprocessError) as exc:
        return {"contender": name, "ok": False, "error": str(exc)[:240]}
    cfg = config_for(peer, src)
    cmd = command(peer, src, out, calib, result_path, cfg)
    start = time.perf_counter()
    with log.open("a") as log_file:
        log_file.write(f"$ {' '.join(cmd)}\n")
        log_file.flush()
        try:
            proc = subprocess.run(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout, check=False,
                cwd=out.parent, preexec_fn=_limit_memory,
            )  # fmt: skip
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            return {"contender": name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    result = parse_result(result_path, log, code)
    if result.get("error") == "no output model written":  # Quark logs its error and returns
        result["error"] += f" ({log_error(log)})"
    if not result.get("ok") and code == -9:
        result["error"] = f"killed (SIGKILL, out of memory?): {result['error']}"
    result.setdefault("seconds", round(time.perf_counter() - start, 3))
    result["contender"] = name
    result["extra"] = {**result.get("extra", {}), "venv": meta["versions"], "config": cfg}
    return result
