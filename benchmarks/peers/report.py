"""RESULTS.md section for the peers: per model, onnxcomp int8, onnxruntime's quantizers and
every peer side by side (task metric, validity, size, speed @1t, quantizer cost), then
onnxcomp int8 against the best peer of each model.

Also ``python -m benchmarks.peers.report RESULTS_JSON...`` prints the section alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OURS = "onnxcomp-int8"
TIE = 0.005  # half a point of the task metric: closer than that is a tie
TIE_COSINE = 0.0005  # the zoo's random-weight CNNs are judged on cosine to fp32


def _f(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _metric(entry: dict, row: dict) -> tuple[str, float | None, float | None]:
    """(metric name, value, drop vs fp32) of one row, corpus or zoo."""
    if entry.get("real"):
        return entry["metric"], row.get("metric"), row.get("drop")
    fid = row.get("fidelity") or {}
    if fid.get("accuracy") is not None:
        base = (entry.get("fp32") or {}).get("accuracy")
        drop = base - fid["accuracy"] if base is not None else None
        return "accuracy", fid["accuracy"], drop
    if fid.get("neighbour_agreement") is not None:  # MiniLM: real weights
        return "neighbour agreement", fid["neighbour_agreement"], 1 - fid["neighbour_agreement"]
    # random-weight CNNs: top-1 agreement among 1000 near-tied classes is noise (README)
    cos = fid.get("cosine")
    return "cosine to fp32", cos, None if cos is None else 1 - cos


def _latency(entry: dict, row: dict) -> tuple[dict, dict]:
    """(fp32, row) latency at 1 thread, corpus or zoo layout."""
    if entry.get("real"):
        return (entry.get("fp32") or {}).get("latency_1t") or {}, row.get("latency_1t") or {}
    base = ((entry.get("fp32") or {}).get("latency") or {}).get("1") or {}
    return base, (row.get("latency") or {}).get("1") or {}


def speed(entry: dict, row: dict) -> dict[str, float | None]:
    """Speed-up over fp32 at 1 thread: of the medians, paired per round, and of CPU time."""
    base, lat = _latency(entry, row)
    out: dict[str, float | None] = {"median": None, "paired": None, "cpu": None}
    if base.get("median_ms") and lat.get("median_ms"):
        out["median"] = base["median_ms"] / lat["median_ms"]
    out["paired"] = lat.get("paired_speedup")
    if base.get("cpu_median_ms") and lat.get("cpu_median_ms"):
        out["cpu"] = base["cpu_median_ms"] / lat["cpu_median_ms"]
    return out


def _row(entry: dict, name: str, row: dict) -> str:
    if row.get("status") != "ok":
        why = (row.get("error") or "").replace("|", "/")[:160]
        return f"| {name} | {row.get('status')}: {why} |||||||"
    _, value, drop = _metric(entry, row)
    s = speed(entry, row)
    extra = row.get("extra") or {}
    note = f" ({extra['upgraded']})" if extra.get("upgraded") else ""
    valid = row.get("valid", "–").replace("|", "/")[:120]
    speeds = " / ".join(_f(s[k], "{:.2f}x") for k in ("median", "paired", "cpu"))
    agree = (row.get("fidelity") or {}).get("top1_agreement")
    top1 = f"; top-1 agr {agree:.3f}" if agree is not None else ""
    fmt = "{:.3f}" if entry.get("real") or value is None or value < 0.99 else "{:.5f}"
    return (
        f"| {name}{note} | {_f(value, fmt)} ({_f(drop, '{:+.3f}')}{top1}) | "
        f"{valid} | {_f(row.get('size_ratio'), '{:.3f}')} | {speeds} | "
        f"{_f(row.get('seconds'), '{:.1f}')} ({_f(row.get('cpu_s'), '{:.1f}')}) | "
        f"{_f(row.get('peak_rss_mb'), '{:.0f}')} | {_f(row.get('load_before'), '{:.1f}')} |"
    )


def robust_speed(entry: dict, row: dict | None) -> float | None:
    """The speed-up a busy machine moves least: by thread CPU time, else paired."""
    if not row:
        return None
    s = speed(entry, row)
    return s["cpu"] or s["paired"]


def _peer_rows(entry: dict, peers: set[str]) -> list[tuple[str, dict]]:
    return [(n, r) for n, r in (entry.get("contenders") or {}).items() if n in peers]


def best_peer(entry: dict, peers: set[str]) -> tuple[str | None, dict | None]:
    """The peer contender with the best metric on this model (ties: the faster)."""
    ok = [(n, r) for n, r in _peer_rows(entry, peers) if r.get("status") == "ok"]
    ok = [(n, r) for n, r in ok if _metric(entry, r)[1] is not None]
    if not ok:
        return None, None
    return max(ok, key=lambda kv: (_metric(entry, kv[1])[1], robust_speed(entry, kv[1]) or 0))


def verdict(entry: dict, ours: dict | None, peer: dict | None) -> str:
    """Where onnxcomp int8 stands against one peer row: metric first, then speed."""
    if not ours or ours.get("status") != "ok":
        return "ours failed"
    if not peer:
        return "every peer failed"
    (metric, a, _), b = _metric(entry, ours), _metric(entry, peer)[1]
    if a is None or b is None:
        return "–"
    tie, fmt = (TIE_COSINE, "{:.5f}") if metric.startswith("cosine") else (TIE, "{:.3f}")
    if a < b - tie:
        return f"**peer better by {fmt.format(b - a)}**"
    if a > b + tie:
        return f"ours better by {fmt.format(a - b)}"
    sa, sb = robust_speed(entry, ours), robust_speed(entry, peer)
    if sa is None or sb is None:
        return "metric tie"
    return "tie, ours faster" if sa >= sb * 0.98 else f"**tie, peer faster ({sb / sa:.2f}x ours)**"


def section(payload: dict, peers: set[str]) -> list[str]:
    """Nothing when no peer ran in this payload."""
    entries = [*(payload.get("real") or []), *(payload.get("results") or [])]
    entries = [e for e in entries if _peer_rows(e, peers)]
    if not entries:
        return []
    lines = [
        "## Peers: NNCF, AMD Quark and aimet-onnx against onnxcomp (same run)",
        "",
        "Each peer runs in its own venv (benchmarks/peers: pinned versions below), on the "
        "same fp32 file and calibration feeds as onnxcomp and onnxruntime; every output is "
        "scored and timed here. Metric = the corpus model's task metric (zoo: accuracy where "
        "there are labels, nearest-neighbour agreement with fp32 on MiniLM, cosine to fp32 on "
        "the random-weight CNNs with top-1 agreement beside it), drop vs fp32 in brackets; "
        "valid = onnx.checker, an onnxruntime CPU session and fp32's output shapes; size = "
        "bytes / fp32 bytes; speed @1t = "
        "fp32 / model latency at 1 thread, sessions interleaved in one process: ratio of "
        "medians / median of per-round paired ratios / ratio of the thread's CPU time (the "
        "figure a busy machine moves least); quantize = wall s (CPU s) of the quantization "
        "step in its own process, peak RSS of that process (interpreter and libraries "
        "included), load = 1-min load average when it started.",
        "",
    ]
    for env, pins in (payload.get("peer_pins") or {}).items():
        lines.append(f"- {env}: `{' '.join(pins)}`")
    lines.append("")
    head = (
        "| contender | metric (drop) | valid | size | speed @1t median / paired / CPU "
        "| quantize s (CPU s) | peak RSS MB | load |"
    )
    for entry in entries:
        metric = _metric(entry, next(iter((entry.get("contenders") or {}).values()), {}))[0]
        fp32 = entry.get("fp32") or {}
        base = fp32.get("metric", fp32.get("accuracy"))
        lines += [
            f"### {entry['model']} ({metric}; fp32 {_f(base, '{:.3f}')})",
            "",
            head,
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [_row(entry, n, r) for n, r in (entry.get("contenders") or {}).items()]
        lines.append("")
    lines += [
        "### onnxcomp int8 against the best peer of each model",
        "",
        "| model | onnxcomp int8 | best peer | its metric | speed @1t (CPU time) ours / peer "
        "| verdict |",
        "|---|---|---|---|---|---|",
    ]
    for entry in entries:
        ours = (entry.get("contenders") or {}).get(OURS)
        name, peer = best_peer(entry, peers)
        ours_m = _metric(entry, ours)[1] if ours and ours.get("status") == "ok" else None
        peer_m = _metric(entry, peer)[1] if peer else None
        so, sp = robust_speed(entry, ours), robust_speed(entry, peer)
        fmt = "{:.3f}" if entry.get("real") else "{:.5f}"
        lines.append(
            f"| {entry['model']} | {_f(ours_m, fmt)} | {name or 'all failed'} | "
            f"{_f(peer_m, fmt)} | {_f(so, '{:.2f}x')} / {_f(sp, '{:.2f}x')} | "
            f"{verdict(entry, ours, peer)} |"
        )
    lines.append("")
    return lines


def main(argv: list[str]) -> int:
    from benchmarks.peers import PEER_CONTENDERS

    for path in argv:  # e.g. a corpus run and a zoo run
        payload = json.loads(Path(path).read_text())
        print("\n".join(section(payload, set(PEER_CONTENDERS))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
