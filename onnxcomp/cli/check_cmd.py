"""onnxcomp check ORIGINAL COMPRESSED [--data DATA] [--labels NAME] [--max-drop X] ..."""

from __future__ import annotations

import click

from onnxcomp.check import CheckResult, check
from onnxcomp.cli._app import app, emit_json, escape, say, wrote
from onnxcomp.cli._options import click_options
from onnxcomp.io.safe_io import check_report_target
from onnxcomp.options import CheckOptions
from onnxcomp.report import require_plotly


@app.command("check")
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@click_options(CheckOptions)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option(
    "--html", "html", metavar="FILE", type=click.Path(dir_okay=False),
    help="Also write a self-contained HTML report with plots (needs onnxcomp[report]).",
)  # fmt: skip
def check_command(original: str, compressed: str, as_json: bool, html: str | None, **kwargs) -> int:
    """Compare ORIGINAL and COMPRESSED: size, fidelity or accuracy, latency."""
    if html:
        require_plotly()
        inputs = (original, compressed, *([kwargs["data"]] if kwargs.get("data") else []))
        check_report_target(html, "--html report", inputs)
    result = check(original, compressed, **kwargs)
    if html:
        from onnxcomp.report.check_page import write_check_html

        page = write_check_html(result, html)
    if as_json:
        emit_json(result)
    else:
        say(render(result))
    if html:
        wrote(page, as_json)
    return 0 if result.passed else 1


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def render(r: CheckResult) -> str:
    lines = [
        f"{'':24}{'original':>14}{'compressed':>14}{'ratio':>9}",
        f"{'file bytes':24}{r.original_bytes:>14,}{r.compressed_bytes:>14,}{r.size_ratio:>9.3f}",
        f"{'parameter bytes':24}{r.original_param_bytes:>14,}{r.compressed_param_bytes:>14,}"
        f"{r.compressed_param_bytes / max(r.original_param_bytes, 1):>9.3f}",
    ]
    lo, lc = r.latency_original, r.latency_compressed
    lines += [f"note: {escape(n)}" for n in r.notes]
    if lo and lc:
        lines.append(
            f"{'latency median ms':24}{lo.median_ms:>14.3f}{lc.median_ms:>14.3f}"
            f"{r.latency_ratio:>9.3f}"
        )
        lines.append(
            f"{'latency p90 ms':24}{lo.p90_ms:>14.3f}{lc.p90_ms:>14.3f}"
            f"{lc.p90_ms / lo.p90_ms:>9.3f}"
        )
    if r.accuracy_original is not None:
        lines.append(
            f"{'accuracy':24}{_pct(r.accuracy_original):>14}{_pct(r.accuracy_compressed):>14}"
            f"   drop {_pct(r.accuracy_drop)}"
        )
    for o in r.outputs:
        cos = "n/a" if o.cosine is None else f"{o.cosine:.6f}"
        worst = ""
        if o.worst_component_error is not None and o.components and o.components > 1:
            worst = (
                f", worst of {o.components} components {escape(o.worst_component or '')} "
                f"error {o.worst_component_error:.4g} (cosine {o.worst_component_cosine:.6f})"
            )
        elif o.worst_component_error is not None:
            worst = f", error {o.worst_component_error:.4g}"
        lines.append(
            f"output {escape(o.name)}: top-1 agreement {_pct(o.top1_agreement)}, "
            f"global cosine {cos}{worst}, max abs error {o.max_abs_error:.4g}"
        )
    lines += _task_lines(r)
    kind = "SYNTHETIC inputs (no --data given)" if r.synthetic else "data"
    timing = f"; latency at {r.threads} thread(s), batch {r.latency_batch}" if lo else ""
    lines.append(f"{kind}: {escape(r.data)}, {r.samples} samples{timing}")
    if r.max_drop is not None:
        verdict = "PASS" if r.passed else "FAIL"
        b = r.drop_bound
        bound = (
            "" if b is None else f", upper bound {b.upper:.2%} at {b.confidence:.0%} ({b.method})"
        )
        lines.append(
            f"{verdict}: drop {_pct(r.drop)}{bound} vs max {_pct(r.max_drop)} "
            f"({escape(r.metric or 'no metric')})"
        )
    return "\n".join(lines)


def _task_lines(r: CheckResult) -> list[str]:
    task = (r.judgement or {}).get("task")
    if not task:
        return [f"judged on: {escape(r.metric or 'nothing comparable')} (no task: --task sets one)"]
    figures = ", ".join(
        f"{k} {v:,.0f}" if k.startswith("detections") else f"{k} {v:.4g}"
        for k, v in task["figures"].items()
    )
    against = "labels" if task["against"] == "labels" else "the original"
    detail = f" ({escape(task['detail'])})" if task["detail"] else ""
    lines = [
        f"task {task['task']}{detail} against {against}: "
        f"{task['metric']} {task['original']:.4f} -> {task['compressed']:.4f}"
    ]
    if figures:
        lines.append(f"  {figures}")
    return lines
