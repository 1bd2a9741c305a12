"""Fault injection for test_faults.py: run a CLI command in forked children and kill
each one at a chosen moment (the n-th file rename, or after a delay), then run the
next command and report what the folder holds.

Imports happen once here; each child is a fork, so a kill lands in the command's own
work, not in Python's start-up. Usage: ``python fault_runner.py SPEC.json``; prints one
JSON list with a record per scenario.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from onnxcomp.cli import main  # imported before any fork

SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def _state(folder: Path, names: list[str]) -> dict:
    files = {}
    for name in names:
        p = folder / name
        files[name] = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
    litter = sorted(p.name for p in folder.iterdir() if p.name.startswith(".onnxcomp"))
    return {"files": files, "litter": litter}


def _child(work: Path, args: list[str], scenario: dict) -> None:
    os.setpgid(0, 0)  # its own group: a kill -9 of the job takes its workers with it
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.chdir(work)
    sig = SIGNALS[scenario.get("signal", "KILL")]
    kind = scenario.get("kind")
    if kind == "replace":
        real, count = os.replace, [0]

        def replace(*a, **k):
            count[0] += 1
            if count[0] == scenario["n"]:
                os.kill(os.getpid(), sig)
            return real(*a, **k)

        os.replace = replace
    elif kind == "time":
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), sig))
        signal.setitimer(signal.ITIMER_REAL, scenario["delay"])
    elif kind == "count":
        real, count = os.replace, [0]

        def replace(*a, **k):
            count[0] += 1
            (work.parent / "replace_count").write_text(str(count[0]))
            return real(*a, **k)

        os.replace = replace
    code = 3
    try:
        code = main(args)
    finally:
        os._exit(code)


def _end_group(pgid: int) -> None:
    """What a killed job leaves (an auto worker process) dies with it, as when a shell or
    container kills the job; wait until the group is gone, at most a few seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _run(work: Path, args: list[str], scenario: dict) -> tuple[int, float]:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(work, args, scenario)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    if os.WIFSIGNALED(status):
        _end_group(pid)
        return -os.WTERMSIG(status), seconds
    return os.WEXITSTATUS(status), seconds


def _plan(spec: dict, reference: dict) -> list[dict]:
    """Kill at each of the last ``kill_last`` renames, and after ``random`` seeded delays
    within the reference run's duration, with each of ``signals``."""
    import random

    rng = random.Random(spec.get("seed_value", 0))
    n = reference["replaces"]
    out = []
    for k in range(max(1, n - spec.get("kill_last", n) + 1), n + 1):
        out.append({"kind": "replace", "n": k, "signal": "KILL"})
    for sig in spec.get("signals", ["KILL"]):
        for _ in range(spec.get("random", 0)):
            delay = rng.uniform(0.001, reference["seconds"])
            out.append({"kind": "time", "delay": round(delay, 4), "signal": sig})
    return out


def run(spec: dict) -> list[dict]:
    seed, work = Path(spec["seed"]), Path(spec["work"])
    records: list[dict] = []
    scenarios = [{"kind": "count"}]
    while scenarios:
        scenario = scenarios.pop(0)
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(seed, work)
        code, seconds = _run(work, spec["command"], scenario)
        record = {"scenario": scenario, "code": code, "seconds": seconds}
        if scenario.get("kind") == "count":
            counter = work.parent / "replace_count"
            record["replaces"] = int(counter.read_text()) if counter.exists() else 0
        record["after"] = _state(work, spec["watch"])
        if spec.get("next"):
            record["next_code"], _ = _run(work, spec["next"], {})
            record["after_next"] = _state(work, spec["watch"])
        records.append(record)
        if scenario.get("kind") == "count":
            scenarios = _plan(spec, record)
    return records


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
