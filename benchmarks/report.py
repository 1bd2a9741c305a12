"""RESULTS.md from the run's raw results: machine, command, per-contender summary, tables."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from benchmarks.corpus.report import section as real_section
from benchmarks.peers import PEER_CONTENDERS
from benchmarks.peers.report import section as peers_section
from benchmarks.report_sections import auto_section, recovery_section

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx")


def machine() -> dict:
    """CPU model and SIMD flags, core count, library versions: what the figures depend on."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in ("", platform.machine()):
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                have = set(value.split())
                flags = [f for f in INTERESTING_FLAGS if any(h.startswith(f) for h in have)]
    except OSError:
        pass
    versions = {}
    for pkg in ("onnxruntime", "onnx", "onnx-ir", "numpy", "onnxcomp", "neural-compressor", "nncf"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "flags": flags,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
        "onnxcomp_commit": _git_head(),
    }


def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _f(value, fmt: str = "{:.3f}", none: str = "–") -> str:
    return none if value is None else fmt.format(value)


def summary(results: list[dict], contenders: list[str]) -> list[dict]:
    """Per contender, over the models it ran on: geomean speedup/size, worst fidelity."""
    out = []
    for cname in contenders:
        rows = [(m, m["contenders"][cname]) for m in results if cname in m.get("contenders", {})]
        ok = [(m, r) for m, r in rows if r["status"] == "ok"]
        fid = [r.get("fidelity", {}) for _, r in ok]
        drops = [
            m["fp32"]["accuracy"] - f["accuracy"]
            for (m, _), f in zip(ok, fid, strict=True)
            if f.get("accuracy") is not None and m["fp32"].get("accuracy") is not None
        ]
        agree = [f["top1_agreement"] for f in fid if f.get("top1_agreement") is not None]
        agree += [f["neighbour_agreement"] for f in fid if f.get("neighbour_agreement") is not None]
        out.append(
            {
                "contender": cname,
                "ok": len(ok),
                "ran": len([r for _, r in rows if r["status"] != "skipped"]),
                "skipped": next((r["error"] for _, r in rows if r["status"] == "skipped"), None),
                "speedup": {
                    t: _geomean([r.get("latency", {}).get(t, {}).get("speedup") for _, r in ok])
                    for t in ("1", "2")
                },
                "size_ratio": _geomean([r["size_ratio"] for _, r in ok]),
                "worst_cosine": min((f["cosine"] for f in fid if f.get("cosine")), default=None),
                "worst_agreement": min(agree, default=None),
                "worst_accuracy_drop": max(drops, default=None),
            }
        )
    return out


def markdown(payload: dict) -> str:
    m, results = payload["machine"], payload["results"]
    lines = [
        "# onnxcomp benchmarks",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'n/a'}; "
        f"{m['os']}, Python {m['python']}",
        "- Versions: "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + (f"; onnxcomp commit {m['onnxcomp_commit']}" if m.get("onnxcomp_commit") else ""),
        f"- Command: `{payload['command']}`",
        f"- Date: {payload['date']} (run took {payload.get('wall_s', 0) / 60:.1f} min)",
    ]
    lines += [f"- Note: {n}" for n in payload.get("notes", [])]
    lines.append(
        "- Method, zoo and caveats (random-weight CNNs: compare contenders, read absolute "
        "fidelity from digits and MiniLM): benchmarks/README.md"
    )
    lines += ["", *real_section(payload.get("real") or [])]
    lines += peers_section(payload, set(PEER_CONTENDERS))
    lines += holdout_section(payload.get("auto_holdout"))
    lines += storage_section(payload.get("storage"))
    for section in payload.get("sections") or []:
        lines += measured_section(section)
    lines += [
        "",
        "## Summary per contender (zoo)",
        "",
        "Geometric means over the models a contender succeeded on; speedup = fp32 median "
        "latency / contender median latency in the same run (higher is better); size = "
        "compressed / fp32 bytes. Worst fidelity over those models: lowest cosine to fp32 "
        "outputs, lowest top-1 (or nearest-neighbour) agreement, largest accuracy drop.",
        "",
    ]
    for s in summary(results, payload["contenders"]):
        if s["skipped"] and not s["ran"]:
            lines.append(f"- **{s['contender']}**: skipped ({s['skipped']})")
            continue
        lines.append(
            f"- **{s['contender']}**: {s['ok']}/{s['ran']} models ok; speedup "
            f"{_f(s['speedup']['1'], '{:.2f}x')} @1t, {_f(s['speedup']['2'], '{:.2f}x')} @2t; "
            f"size {_f(s['size_ratio'], '{:.3f}')}; worst cosine {_f(s['worst_cosine'], '{:.4f}')}"
            f", agreement {_f(s['worst_agreement'], '{:.3f}')}, accuracy drop "
            f"{_f(s['worst_accuracy_drop'], '{:+.3f}')}"
        )
    lines.append("")
    lines += auto_section(results)
    lines += recovery_section(results)
    lines += ["## Models", ""]
    for entry in results:
        lines += _model_section(entry)
    lines += ["## Contenders", ""]
    lines += [f"- `{name}`: {desc}" for name, desc in payload.get("descriptions", {}).items()]
    return "\n".join(lines) + "\n"


HEADER = (
    "| contender | MB | size | compress s | peak RSS MB | ms @1t (p90) | speedup @1t "
    "| ms @2t (p90) | speedup @2t | top-1 agr | cosine | max abs err | accuracy | status |"
)


def _lat(lat: dict | None) -> tuple[str, str]:
    if not lat or "median_ms" not in lat:
        return "–", "–"
    return f"{lat['median_ms']:.2f} ({lat['p90_ms']:.2f})", _f(lat.get("speedup"), "{:.2f}x")


def _model_section(entry: dict) -> list[str]:
    lines = [f"### {entry['model']}", "", f"{entry['source']}. Inputs: {entry['inputs']}.", ""]
    if "skipped" in entry:
        return [*lines, f"**Skipped**: {entry['skipped']}", ""]
    fp32 = entry["fp32"]
    lines.append(
        f"Calibration samples: {entry['calib_samples']}; evaluation samples: "
        f"{entry.get('eval_samples')}; fidelity judged on output `{entry['output']}`"
        + (f"; fp32 accuracy {fp32['accuracy']:.4f}" if fp32.get("accuracy") is not None else "")
        + "."
    )
    if entry.get("auto_budget"):
        lines += ["", f"auto budget: {entry['auto_budget']}, searched on the calibration split."]
    if entry.get("not_run"):
        lines += ["", f"Not run on this model (slow; see benchmarks/README.md): "
                  f"{', '.join(entry['not_run'])}."]  # fmt: skip
    lines += ["", HEADER, "|" + "---|" * 14]
    lat = fp32.get("latency", {})
    l1, _ = _lat(lat.get("1"))
    l2, _ = _lat(lat.get("2"))
    acc = _f(fp32.get("accuracy"), "{:.4f}")
    lines.append(
        f"| fp32 | {fp32['bytes'] / 2**20:.2f} | 1.000 | – | – | {l1} | 1.00x | {l2} | 1.00x "
        f"| – | – | – | {acc} | reference |"
    )
    for cname, row in entry["contenders"].items():
        if row["status"] != "ok":
            lines.append(f"| {cname} |" + " – |" * 12 + f" {row['status']}: {row['error']} |")
            continue
        f = row.get("fidelity", {})
        l1, s1 = _lat(row.get("latency", {}).get("1"))
        l2, s2 = _lat(row.get("latency", {}).get("2"))
        agree = f.get("top1_agreement")
        if agree is None:
            agree = f.get("neighbour_agreement")
        lines.append(
            f"| {cname} | {row['bytes'] / 2**20:.2f} | {row['size_ratio']:.3f} "
            f"| {_f(row.get('seconds'), '{:.1f}')} | {_f(row.get('peak_rss_mb'), '{:.0f}')} "
            f"| {l1} | {s1} | {l2} | {s2} | {_f(agree)} | {_f(f.get('cosine'), '{:.5f}')} "
            f"| {_f(f.get('max_abs_error'), '{:.3g}')} | {_f(f.get('accuracy'), '{:.4f}')} | ok |"
        )
    if entry.get("kind") == "embedding":
        lines.append("")
        lines.append(
            "Top-1 agreement for this embedding model is nearest-neighbour agreement: does "
            "each evaluation sentence find the same closest other sentence as with fp32."
        )
    return [*lines, ""]


def storage_section(storage: dict | None) -> list[str]:
    """Codebook + packing on real models (``benchmarks.codebook_bench`` tables)."""
    if not storage:
        return []
    lines = ["", "## Storage: codebooks and packing", "", storage["text"]]
    for table in storage["tables"]:
        lines += ["", *table]
    return lines


def measured_section(section: dict) -> list[str]:
    """A measured study kept with its command and text: {"title", "text", "tables"} (each
    table a list of Markdown lines), e.g. the low-bit and structured-pruning runs."""
    lines = ["", f"## {section['title']}", "", section["text"]]
    for table in section.get("tables", []):
        lines += ["", *table]
    return lines


def holdout_section(holdout: dict | None) -> list[str]:
    """auto's chosen model judged on data it never saw (``benchmarks.auto_holdout``)."""
    if not holdout:
        return []
    from benchmarks.auto_holdout import table

    return [
        "",
        "## auto's budget on unseen data",
        "",
        f"`{holdout['command']}` ({holdout['date']}, commit {holdout['commit']}). Per seed: "
        "the chosen model's drop on the search part, on the held-back verification part "
        "and its one-sided 95% bound (accept when bound <= margin; * = margin widened "
        "because the held-back part cannot resolve the budget), the drop on the "
        "benchmark's own unseen evaluation split, its file size, and two single global "
        "settings (one codebook and sparsity for every layer) to compare with: the "
        "smallest that passes the same verification on the same held-back samples, and "
        "the smallest that meets the budget on the unseen split, chosen with hindsight.",
        "",
        table(holdout["rows"], holdout["budgets"]),
    ]
