"""Command line: ``python -m benchmarks [--quick] [--models a,b] [--contenders x,y]``.

Writes benchmarks/results.json (raw numbers) and benchmarks/RESULTS.md by default;
``--report-only`` rebuilds the Markdown from an existing JSON; ``--merge`` combines runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from benchmarks import report, runner, zoo
from benchmarks.contenders import CONTENDERS
from benchmarks.corpus.bench import REAL_CONTENDERS, run_real_model
from benchmarks.merge import merge_runs

HERE = Path(__file__).resolve().parent


def _names(value: str | None, known: dict, default: list[str], what: str) -> list[str]:
    if not value:
        return default
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(known)})")
    return names


def _contenders(args: argparse.Namespace) -> list[str]:
    """The named contenders (default: all but the peers), plus the peers with --peers
    (all but the slow ones, which run only when named)."""
    default = [n for n, c in CONTENDERS.items() if not c.peer]
    names = _names(args.contenders, CONTENDERS, default, "contenders")
    if args.peers:
        names += [n for n, c in CONTENDERS.items() if c.peer and not c.slow and n not in names]
    return names


def _peer_pins(contenders: list[str]) -> dict[str, list[str]]:
    """Each selected peer's pinned requirements, logged before any long work."""
    from benchmarks.peers import PEER_CONTENDERS

    pins = {}
    for name in contenders:
        if name in PEER_CONTENDERS:
            env = PEER_CONTENDERS[name][1].env
            pins[env.name] = env.pins()
    for env_name, reqs in pins.items():
        logging.getLogger("benchmarks").info("peer %s: %s", env_name, " ".join(reqs))
    return pins


def _html(args: argparse.Namespace, payload: dict) -> None:
    if args.html:
        from benchmarks.report_html import write_html

        write_html(payload, args.html)


def _real_names(value: str | None) -> list[str]:
    from benchmarks.corpus import registry

    known = registry()
    return _names(value, known, sorted(known), "corpus models")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure onnxcomp against onnxruntime.quantization and other peers.",
    )
    p.add_argument("--quick", action="store_true", help="small model set, fewer samples/runs")
    p.add_argument("--models", help=f"comma-separated; known: {','.join(zoo.MODELS)}")
    p.add_argument("--contenders", help=f"comma-separated; known: {','.join(CONTENDERS)}")
    p.add_argument(
        "--peers",
        action="store_true",
        help="add the peer quantizers (NNCF, Quark, aimet-onnx), each installed on first use "
        "into its own venv under ~/.cache/onnxcomp-peers (benchmarks/peers)",
    )
    p.add_argument(
        "--no-peer-install",
        action="store_true",
        help="run only peers whose venv is already built; the others are skipped",
    )
    p.add_argument("--threads", default="1,2", help="thread counts for latency ('' = none)")
    p.add_argument("--runs", type=int, help="max latency rounds per thread count")
    p.add_argument("--budget", type=float, help="latency seconds per model and thread count")
    p.add_argument("--eval-samples", type=int, help="override evaluation sample counts")
    p.add_argument("--calib-samples", type=int, help="override calibration sample counts")
    p.add_argument("--timeout", type=float, help="seconds allowed per compression")
    p.add_argument("--auto-trials", type=int, help="max_trials of the auto contenders")
    p.add_argument("--auto-time", type=float, help="time_limit (s) of the auto contenders")
    p.add_argument("--cache", type=Path, default=HERE / ".cache", help="built zoo models")
    p.add_argument("--out", type=Path, default=HERE / "out", help="compressed models, logs")
    p.add_argument("--json", type=Path, default=HERE / "results.json", help="raw results")
    p.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md", help="the report")
    p.add_argument("--report-only", action="store_true", help="re-render --markdown from --json")
    p.add_argument("--note", action="append", default=[], help="a line for RESULTS.md")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="combine these results JSONs (later runs win per model and contender) into "
        "--json and --markdown",
    )
    p.add_argument(
        "--real",
        action="store_true",
        help="the real-model corpus only (benchmarks/corpus; the default full run does the "
        "corpus first, then the zoo; --quick and --models leave it out)",
    )
    p.add_argument("--no-real", action="store_true", help="skip the real-model corpus")
    p.add_argument("--real-models", help="comma-separated corpus models (default: all cached)")
    p.add_argument("--html", type=Path, help="also write the results as one offline HTML page")
    p.add_argument("--list", action="store_true", help="list models and contenders, then exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    if args.list:
        for name, spec in zoo.MODELS.items():
            quick = "(quick) " if name in zoo.QUICK_MODELS else ""
            print(f"model      {name:14} {quick}{spec.source}")
        for name, c in CONTENDERS.items():
            why = c.unavailable()
            tag = ", slow: name it" if c.slow else ""
            tag = f" (peer, own venv{tag})" if c.peer else ""
            print(f"contender  {name:22} {c.summary}{tag}" + (f" [{why}]" if why else ""))
        return 0
    if args.merge:
        payload = merge_runs(args.merge)
        payload["notes"] += args.note
        runner.dump(args.json, payload)
        args.markdown.write_text(report.markdown(payload))
        return 0
    if args.html:
        from onnxcomp.report.page import require_plotly

        require_plotly()  # before any long work
    if args.report_only:
        payload = json.loads(args.json.read_text())
        args.markdown.write_text(report.markdown(payload))
        _html(args, payload)
        return 0
    default_models = list(zoo.QUICK_MODELS) if args.quick else list(zoo.MODELS)
    if args.no_peer_install:
        os.environ["ONNXCOMP_PEERS_INSTALL"] = "0"
    cfg = runner.RunConfig(
        models=_names(args.models, zoo.MODELS, default_models, "models"),
        contenders=_contenders(args),
        quick=args.quick,
        cache=args.cache,
        out=args.out,
        threads=tuple(int(t) for t in args.threads.split(",") if t.strip()),
        max_runs=args.runs or (30 if args.quick else 100),
        budget_s=args.budget or (6.0 if args.quick else 20.0),
        timeout_s=args.timeout or (600.0 if args.quick else 3600.0),
        eval_limit=args.eval_samples,
        calib_limit=args.calib_samples,
        # contenders named explicitly run on every selected model
        extended_models=None if args.contenders else zoo.EXTENDED_MODELS[args.quick],
        auto_trials=args.auto_trials,
        auto_time_s=args.auto_time,
    )
    cfg.out.mkdir(parents=True, exist_ok=True)
    argv_text = sys.argv[1:] if argv is None else argv
    payload = {
        "command": shlex.join(["python", "-m", "benchmarks", *argv_text]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
        "quick": args.quick,
        "notes": args.note,
        "contenders": cfg.contenders,
        "load_start": list(os.getloadavg()),
        "peer_pins": _peer_pins(cfg.contenders),
        "descriptions": {n: CONTENDERS[n].summary for n in cfg.contenders},
        "config": {
            "threads": list(cfg.threads),
            "max_runs": cfg.max_runs,
            "budget_s": cfg.budget_s,
            "timeout_s": cfg.timeout_s,
            "extended_models": cfg.extended_models,
        },
        "results": [],
    }
    start = time.perf_counter()

    def save(entry: dict) -> None:
        payload["results"].append(entry)
        payload["wall_s"] = round(time.perf_counter() - start, 1)
        runner.dump(args.json, payload)
        args.markdown.write_text(report.markdown(payload))

    # The corpus runs in the default full run (before the zoo) and with --real; a run of
    # chosen --models or --quick leaves it out.
    if args.real or not (args.no_real or args.models or args.quick):
        payload["real"] = []
        for name in _real_names(args.real_models):
            entry = run_real_model(
                name,
                [c for c in REAL_CONTENDERS if c in cfg.contenders or not args.contenders]
                + [c for c in cfg.contenders if CONTENDERS[c].peer],
                cfg.out,
                threads=cfg.threads,
                max_runs=cfg.max_runs,
                budget_s=cfg.budget_s,
                timeout_s=cfg.timeout_s,
            )
            payload["real"].append(entry)
            runner.dump(args.json, payload)
            args.markdown.write_text(report.markdown(payload))
    if not args.real:
        runner.run(cfg, on_model=save)
    payload["wall_s"] = round(time.perf_counter() - start, 1)
    payload["load_end"] = list(os.getloadavg())
    runner.dump(args.json, payload)
    args.markdown.write_text(report.markdown(payload))
    _html(args, payload)
    print(f"wrote {args.markdown} and {args.json} in {payload['wall_s'] / 60:.1f} min")
    return 0
