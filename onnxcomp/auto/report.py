"""OUT.report.json and OUT.report.md: what auto measured, tried and chose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxcomp.io.jsonio import jsonable, write_text_atomic


def write_reports(result: Any, out: Path) -> list[Path]:
    data = jsonable(result)
    j = write_text_atomic(
        out.with_name(out.name + ".report.json"), json.dumps(data, indent=2) + "\n"
    )
    m = write_text_atomic(out.with_name(out.name + ".report.md"), render_markdown(result))
    return [j, m]


def _cfg(config: dict[str, int], ladder: list[str]) -> str:
    used = {k: v for k, v in config.items() if v}
    if not used:
        return "all float"
    counts: dict[str, int] = {}
    for rung in used.values():
        counts[ladder[rung]] = counts.get(ladder[rung], 0) + 1
    return ", ".join(f"{n}x {label}" for label, n in sorted(counts.items()))


def render_markdown(r: Any) -> str:
    lines = [f"# onnxcomp auto: {Path(r.model).name}", ""]
    verdict = "found" if r.found else "**nothing fits the budget**"
    lines += [
        f"- objective: {r.objective}; budget: {r.metric} drop <= {r.max_drop}; result: {verdict}",
        "- drops in the trials are on the search part; the finalists are judged on "
        "held-back data (below)",
        f"- original {r.metric}: {r.baseline:.4f}; size {r.original_bytes:,} B "
        f"({r.original_deflate_bytes:,} B deflated)",
        f"- trials: {len(r.trials)}; wall time {r.seconds:.1f} s",
    ]
    for label, t in (("chosen", r.chosen), ("best global setting", r.best_global)):
        if t is None:
            lines.append(f"- {label}: none")
            continue
        lines.append(
            f"- {label}: trial {t.id} ({_cfg(t.config, r.ladder)}): drop {t.drop:.4f}, "
            f"{t.bytes:,} B ({t.bytes / r.original_bytes:.1%} of the original), "
            f"{t.deflate_bytes:,} B deflated"
        )
    if r.latency_ms:
        lines.append("- latency (ms, median): " + ", ".join(
            f"{k} {v:.3f}" for k, v in r.latency_ms.items()))  # fmt: skip
    if r.recipe:
        lines.append(f"- recipe: `{r.recipe}`")
    lines += verification_markdown(r)
    lines += ["", "## Sensitivity (metric drop with the layer alone compressed)", ""]
    rungs = r.ladder[1:]
    lines.append("| layer | " + " | ".join(rungs) + " |")
    lines.append("|---|" + "---|" * len(rungs))
    for name, drops in r.sensitivity.items():
        cells = [f"{drops[x]:.4f}" if x in drops else "" for x in rungs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Trials", "", "| # | stage | config | drop | bytes | deflated | s |"]
    lines.append("|---|---|---|---|---|---|---|")
    for t in r.trials:
        if not t.ok:
            lines.append(f"| {t.id} | {t.stage} | {_cfg(t.config, r.ladder)} | failed: "
                         f"{t.error} | | | {t.seconds:.1f} |")  # fmt: skip
            continue
        lines.append(
            f"| {t.id} | {t.stage} | {_cfg(t.config, r.ladder)} | {t.drop:.4f} | "
            f"{t.bytes:,} | {t.deflate_bytes:,} | {t.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def verification_lines(r: Any) -> list[str]:
    """One line on the held-back data, one per finalist: search vs verification drop."""
    v = r.verification
    if v is None:
        return []
    lines = [
        f"verification: {v.data}; {v.samples} samples; {v.method} bound at "
        f"{v.confidence:.0%} (fixed sequence, safest first); accept when bound <= "
        f"{v.margin:.4f}" + (" (WIDENED: small data)" if v.widened else "")
    ]
    if v.note:
        lines.append(f"note: {v.note}")
    for f in v.finalists:
        verdict = "accepted" if f.accepted else "rejected"
        if f.error:
            verdict = f"failed: {f.error}"
        lines.append(
            f"finalist trial {f.trial}: search drop {f.search_drop:.4f}, verify drop "
            f"{_num(f.verify_drop)}, bound {_num(f.bound)}, {f.bytes or 0:,} B: "
            f"{verdict}"
        )
    return lines


def verification_markdown(r: Any) -> list[str]:
    v = r.verification
    if v is None:
        return []
    lines = ["", "## Verification on held-back data", ""]
    lines += [f"- {line}" for line in verification_lines(r)[: 2 if v.note else 1]]
    lines += ["", "| trial | search drop | verify drop | bound | bytes | verdict |"]
    lines.append("|---|---|---|---|---|---|")
    for f in v.finalists:
        verdict = f"failed: {f.error}" if f.error else ("accepted" if f.accepted else "rejected")
        lines.append(
            f"| {f.trial} | {f.search_drop:.4f} | {_num(f.verify_drop)} | {_num(f.bound)} | "
            f"{f.bytes or 0:,} | {verdict} |"
        )
    return lines
