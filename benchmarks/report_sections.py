"""RESULTS.md sections for two questions: does ``auto`` beat the best global setting,
and how much of plain compression's loss does teacher-guided recovery win back?"""

from __future__ import annotations

# (plain, recovered) contender pairs compared like for like
RECOVERY_PAIRS = (
    ("int8", "onnxcomp-int8", "onnxcomp-gptq-int8"),
    ("50% sparse + int8 weights", "onnxcomp-prune50-weights", "onnxcomp-prune50-sparsegpt"),
)
AUTO = ("onnxcomp-auto-size", "onnxcomp-auto-latency")


def _f(value, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def _kb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1024:,.0f} KB"


def _ms(row: dict | None) -> float | None:
    lat = (row or {}).get("latency", {}).get("1")
    return lat.get("median_ms") if lat else None


def _eval_drop(entry: dict, row: dict | None, metric: str) -> float | None:
    """The budget's metric drop measured by the harness on the unseen evaluation split."""
    fid = (row or {}).get("fidelity")
    if not fid:
        return None
    if metric == "accuracy":
        base = entry["fp32"].get("accuracy")
        return None if base is None or fid.get("accuracy") is None else base - fid["accuracy"]
    if metric == "agreement":
        agree = fid.get("top1_agreement")
        agree = fid.get("neighbour_agreement") if agree is None else agree
        return None if agree is None else 1.0 - agree
    return None if fid.get("cosine") is None else 1.0 - fid["cosine"]


def auto_section(results: list[dict]) -> list[str]:
    rows = []
    for entry in results:
        for cname in AUTO:
            row = entry.get("contenders", {}).get(cname)
            if row and row.get("extra"):
                rows.append(_auto_row(entry, cname, row))
    if not rows:
        return []
    return [
        "## auto vs the best single global setting",
        "",
        "`auto` searches on the calibration split within the model's budget (written in the "
        "model's section); *best global* is the best setting with one precision and one "
        "sparsity for every layer that fits the same budget, from auto's own global sweep. "
        "Size: file bytes, auto's size objective (runs before 2026-12-02 searched on "
        "zlib-deflated bytes, marked *deflated*). "
        "Latency: median ms at 1 thread measured here, alternated with fp32 and the other "
        "contenders. Eval drop: the budget's metric on the evaluation split, which the search "
        "never saw (auto / global; *over* when it exceeds the budget). Trials: used / "
        "allowed; time: auto's wall time. *= best global*: auto kept its global incumbent.",
        "",
        "| model | objective | budget | auto | best global | auto / global | eval drop "
        "| trials | time s | peak RSS MB |",
        "|" + "---|" * 10,
        *rows,
        "",
    ]


def _auto_row(entry: dict, cname: str, row: dict) -> str:
    x = row["extra"]
    glob_row = entry["contenders"].get(f"{cname} (best global)")
    chosen, glob = x.get("chosen") if x.get("found") else None, x.get("best_global")
    setting = x.get("global_setting", "")
    size_key = x.get("size_measure", "deflate_bytes")  # what that run's auto minimised
    if x["objective"] == "size":
        auto_v = chosen and chosen.get(size_key)
        glob_v = glob and glob.get(size_key)
        auto_txt, glob_txt = _kb(auto_v), _kb(glob_v)
    else:
        auto_v = _ms(row) if chosen else None
        glob_v = _ms(glob_row) if glob else None
        auto_txt, glob_txt = _f(auto_v, "{:.2f} ms"), _f(glob_v, "{:.2f} ms")
    if not x.get("found"):
        auto_txt = "nothing faster than fp32" if glob and x["objective"] == "latency" else "none"
    if glob is None:
        glob_txt = "none fits"
    elif setting:
        glob_txt += f" ({setting})"
    ratio = auto_v / glob_v if auto_v and glob_v else None
    if chosen and glob and chosen["id"] == glob["id"]:  # auto kept its global incumbent
        auto_txt, ratio = "= best global", 1.0
    metric = x["metric"]
    drops = " / ".join(_over(_eval_drop(entry, r, metric), x["max_drop"]) for r in (row, glob_row))
    size_txt = " (deflated)" if size_key == "deflate_bytes" else " (bytes)"
    objective = x["objective"] + (size_txt if x["objective"] == "size" else " (@1t)")
    return (
        f"| {entry['model']} | {objective} | {metric} drop <= {x['max_drop']:g} "
        f"| {auto_txt} | {glob_txt} | {_f(ratio)} | {drops} | {x['trials']}/{x['max_trials']} "
        f"| {x['seconds']:.0f} | {_f(row.get('peak_rss_mb'), '{:.0f}')} |"
    )


def _over(drop: float | None, budget: float) -> str:
    return _f(drop, "{:.4f}") + (" (over)" if drop is not None and drop > budget + 1e-9 else "")


def _metrics(entry: dict) -> list[tuple[str, float | None, str]]:
    """(name, fp32 value, fidelity key) for the figures a recovery row is read on."""
    out = []
    if entry["fp32"].get("accuracy") is not None:
        out.append(("accuracy", entry["fp32"]["accuracy"], "accuracy"))
    agree = "neighbour_agreement" if entry.get("kind") == "embedding" else "top1_agreement"
    out.append(("cosine", 1.0, "cosine"))
    out.append(("nn agreement" if agree.startswith("n") else "top-1 agreement", 1.0, agree))
    return out


def recovery_section(results: list[dict]) -> list[str]:
    lines = []
    for entry in results:
        rows = entry.get("contenders", {})
        for label, plain, recovered in RECOVERY_PAIRS:
            if recovered not in rows or plain not in rows:
                continue
            for metric, base, key in _metrics(entry):
                lines.append(_recovery_row(entry, label, metric, base, key, rows[plain],
                                           rows[recovered]))  # fmt: skip
    if not lines:
        return []
    return [
        "## Recovery: plain vs teacher-guided",
        "",
        "Loss = fp32 value - compressed value on the evaluation split. The target for "
        "recovered loss / plain loss is <= 0.50 (GPTQ loses at most half of what plain int8 "
        "loses; SparseGPT keeps at least half of what plain 50% magnitude pruning loses). "
        "When plain compression loses nothing measurable there is nothing to win back, and "
        "the row says so. Cost: compression wall time and peak RSS of the worker process "
        "(plain -> recovered).",
        "",
        "| model | compression | metric | fp32 | plain | recovered | plain loss | recovered "
        "loss | recovered / plain loss | seconds | peak RSS MB |",
        "|" + "---|" * 11,
        *lines,
        "",
    ]


def _recovery_row(entry, label, metric, base, key, plain: dict, rec: dict) -> str:
    def value(row: dict) -> float | None:
        return row.get("fidelity", {}).get(key) if row.get("status") == "ok" else None

    p, r = value(plain), value(rec)
    p_loss = None if p is None or base is None else base - p
    r_loss = None if r is None or base is None else base - r
    # below half a sample (or a cosine loss of 1e-4) there is nothing to win back
    floor = 0.5 / max(entry.get("eval_samples") or 1, 1) if metric != "cosine" else 1e-4
    if p_loss is None or r_loss is None:
        verdict = f"– ({plain['status'] if p is None else rec['status']})"
    elif p_loss < floor:
        verdict = "– (plain loses nothing measurable)"
    elif r_loss <= 0:
        verdict = "no loss left (meets <= 0.50)"
    else:
        share = r_loss / p_loss
        verdict = f"{share:.2f} " + ("(meets <= 0.50)" if share <= 0.5 else "(misses 0.50)")
    fmt = "{:.5f}" if metric == "cosine" else "{:.4f}"
    loss = "{:.1e}" if metric == "cosine" else fmt
    cost = (
        f"{_f(plain.get('seconds'), '{:.1f}')} -> {_f(rec.get('seconds'), '{:.1f}')} "
        f"| {_f(plain.get('peak_rss_mb'), '{:.0f}')} -> {_f(rec.get('peak_rss_mb'), '{:.0f}')}"
    )
    return (
        f"| {entry['model']} | {label} | {metric} | {_f(base, fmt)} | {_f(p, fmt)} | "
        f"{_f(r, fmt)} | {_f(p_loss, loss)} | {_f(r_loss, loss)} | {verdict} | {cost} |"
    )
