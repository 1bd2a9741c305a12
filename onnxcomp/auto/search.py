"""The strategy: global sweep, per-layer sensitivity, threshold bisection, greedy push.

1. Global: every layer on the same rung; the best that fits is the incumbent, so the
   result is never worse than the best single global setting.
2. Sensitivity: each layer alone on each probed rung, the rest float.
3. Bisection on a sensitivity threshold t: each layer takes the most compressed rung
   whose lone risk (the drop; for a 0/1 metric, how far the outputs moved) is <= t.
   More t, more compression: an ordered knob, so bisect it.
4. Greedy: from the best fitting configuration, push single layers one rung further,
   cheapest-per-damage first, while trials and time remain.
5. Fill: trials still left go to thresholds the bisection skipped, so verification has
   steps between safe and cheap to walk down.
Every configuration is checked as a whole model; none is accepted on estimates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from onnxcomp.auto.executor import TrialExecutor
from onnxcomp.auto.space import Space
from onnxcomp.auto.trials import TrialResult, TrialTask, run_trial
from onnxcomp.stats import binomial_lower

EPS = 1e-9
SEARCH_CONFIDENCE = 0.8
FILL = 16  # threshold steps fill_front may add


@dataclass
class SearchState:
    space: Space
    max_drop: float
    objective: str
    executor: TrialExecutor
    workdir: str
    workers: int = 2
    max_trials: int = 60
    deadline: float = float("inf")
    results: list[TrialResult] = field(default_factory=list)
    sensitivity: dict[str, dict[int, float]] = field(default_factory=dict)  # lone drops
    risk: dict[str, dict[int, float]] = field(default_factory=dict)  # TrialResult.risk
    floor: dict[str, int] = field(default_factory=dict)  # the best global setting's rungs
    seen: dict[tuple, TrialResult] = field(default_factory=dict)
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)

    @property
    def trials_left(self) -> int:
        return self.max_trials - len(self.results)

    @property
    def out_of_budget(self) -> bool:
        return self.trials_left <= 0 or time.monotonic() >= self.deadline

    def fits(self, r: TrialResult) -> bool:
        """Within budget on the search part. For a 0/1 metric: unless the search part
        shows it over budget (its loss's lower bound at SEARCH_CONFIDENCE above it): on a
        small part one changed sample can be several budgets, so the point estimate
        would drop candidates the held-back verification, which decides, may accept."""
        if not r.ok or r.drop is None:
            return False
        if r.lost is not None and r.samples:
            return binomial_lower(r.lost, r.samples, SEARCH_CONFIDENCE) <= self.max_drop + EPS
        if r.loss is not None and r.loss > self.max_drop + EPS:  # see stats.loss
            return False
        return r.drop <= self.max_drop + EPS

    def cost(self, r: TrialResult) -> tuple[float, float]:
        """Lower is better. Size: file bytes, then deflated bytes (a sparse tensor too
        small to pay for its packed form still compresses); latency: the share of weights
        on integer kernels, int4 blocks counted half (a proxy: the finalists are timed)."""
        if self.objective == "latency":
            weight = {"int8": 1.0, "int4": 0.5}
            ints = 0.0
            for layer in self.space.layers:
                s = self.space.ladder[r.config.get(layer.name, 0)]
                # removed channels: the layer's MACs and its reader's, counted twice
                ints += layer.params * (weight.get(s.precision, 0.0) + 2 * s.channels)
            return -ints, 0.0
        return float(r.bytes or 0), float(r.deflate_bytes or 0)

    def best(self) -> TrialResult | None:
        fitting = [r for r in self.results if self.fits(r)]
        return min(fitting, key=lambda r: (self.cost(r), r.drop, r.id)) if fitting else None

    def run(self, stage: str, configs: list[dict[str, int]]) -> list[TrialResult]:
        """Results in the order of ``configs``; a configuration already tried is not rerun."""
        configs = [self.space.clamp(c) for c in configs]
        fresh: list[dict[str, int]] = []
        for c in configs:
            if _key(c) not in self.seen and _key(c) not in {_key(f) for f in fresh}:
                fresh.append(c)
        fresh = fresh[: max(self.trials_left, 0)]
        # One round per worker count, so the deadline is checked between rounds.
        for start in range(0, len(fresh), max(self.workers, 1)):
            if time.monotonic() >= self.deadline:
                break
            chunk = fresh[start : start + max(self.workers, 1)]
            tasks = [
                TrialTask(len(self.results) + i + 1, stage, c, self.space.to_options(c),
                          self.workdir)
                for i, c in enumerate(chunk)
            ]  # fmt: skip
            for result in self.executor.map(run_trial, tasks):
                self.results.append(result)
                self.seen[_key(result.config)] = result
                self._progress(result)
        return [self.seen[_key(c)] for c in configs if _key(c) in self.seen]

    def _progress(self, r: TrialResult) -> None:
        best = self.best()
        left = self.deadline - time.monotonic()
        status = "error: " + (r.error or "") if not r.ok else f"drop {r.drop:.4f}"
        best_txt = "no fit yet"
        if best is not None:
            best_txt = f"best {best.bytes:,} B, drop {best.drop:.4f}"
        time_txt = f", {left:.0f} s left" if left != float("inf") else ""
        n = len(self.results)
        self.log(f"trial {n}/{self.max_trials} [{r.stage}] {status}; {best_txt}{time_txt}")


def _key(config: dict[str, int]) -> tuple:
    """Rung 0 is float: a layer left out and a layer at rung 0 are the same config."""
    return tuple(sorted((k, v) for k, v in config.items() if v))


def uniform(space: Space, rung: int) -> dict[str, int]:
    return {layer.name: rung for layer in space.layers}


def global_sweep(state: SearchState) -> None:
    rungs = range(1, len(state.space.ladder))
    state.run("global", [uniform(state.space, r) for r in rungs])


def sensitivity_plan(state: SearchState) -> tuple[list[str], list[int]]:
    """Which layers and rungs to probe with at most half of the trials left.

    Every rung when affordable; else only rungs past the best global setting's: every
    layer keeps at least that one, and the layers differ just past it (the harshest
    rungs break every layer alike). Fewer rungs first, nearest first, then only the
    largest layers: they hold the bytes worth saving. Layers not probed stay on the
    global rung until greedy tries them.
    """
    allowed = max(state.trials_left // 2, 1)
    top = len(state.space.ladder) - 1
    layers = [la.name for la in sorted(state.space.layers, key=lambda la: (-la.params, la.name))]
    above = list(range(max(state.floor.values(), default=0) + 1, top + 1)) or [top]
    spread = sorted({above[0], above[len(above) // 2], above[-1]})
    for rungs in (list(range(1, top + 1)), above, spread, above[:2], above[:1]):
        if len(layers) * len(rungs) <= allowed:
            return layers, rungs
    return layers[: max(allowed, 1)], above[:1]


def measure_sensitivity(state: SearchState) -> None:
    best = state.best()
    state.floor = {k: v for k, v in best.config.items() if v} if best is not None else {}
    if best is not None and best.lost is not None:
        # A 0/1 metric on a small search part: the best global "fits" because a few
        # dozen samples cannot show it over budget, not because it is safe; flooring
        # every layer there would leave nothing between it and safety to verify.
        state.floor = {}
    layers, rungs = sensitivity_plan(state)
    configs = [{name: rung} for rung in rungs for name in layers]
    for r in state.run("sensitivity", configs):
        ((name, rung),) = r.config.items()
        drop = r.drop if r.ok and r.drop is not None else float("inf")
        state.sensitivity.setdefault(name, {})[rung] = drop
        state.risk.setdefault(name, {})[rung] = r.risk if r.ok else float("inf")


def assign(state: SearchState, t: float) -> dict[str, int]:
    """Each layer's most compressed rung whose lone risk is at most t (never below the
    best global setting, which fits as a whole)."""
    config = {}
    for layer in state.space.layers:
        ok = [rung for rung, d in state.risk.get(layer.name, {}).items() if d <= t + EPS]
        config[layer.name] = max([*ok, state.floor.get(layer.name, 0)])
    return config


def bisect_threshold(state: SearchState) -> None:
    """Largest threshold whose assignment fits; assumes fit is monotone in t."""
    thresholds = sorted({d for s in state.risk.values() for d in s.values() if d < 1e9})
    lo, hi = -1, len(thresholds) - 1  # indexes <= lo fit; indexes > hi do not
    while lo < hi and not state.out_of_budget:
        span = hi - lo
        points = sorted({lo + max(span // 3, 1), lo + max(2 * span // 3, 1)})
        results = state.run("bisect", [assign(state, thresholds[p]) for p in points])
        if not results:
            return
        for p, r in zip(points, results, strict=False):
            if state.fits(r):
                lo = max(lo, p)
            else:
                hi = min(hi, p - 1)


def greedy_push(state: SearchState) -> None:
    params = {layer.name: layer.params for layer in state.space.layers}
    rejected: set[tuple] = set()
    while not state.out_of_budget:
        best = state.best()
        if best is None:
            return
        current = {layer.name: best.config.get(layer.name, 0) for layer in state.space.layers}
        moves = []
        for name, rung in current.items():
            if rung >= state.space.top(name):
                continue
            cfg = dict(current, **{name: rung + 1})
            key = tuple(sorted(cfg.items()))
            if key in rejected:
                continue
            damage = state.risk.get(name, {}).get(rung + 1, 0.0)
            if damage == float("inf"):
                continue
            moves.append((damage / max(params[name], 1), name, cfg, key))
        if not moves:
            return
        moves.sort(key=lambda m: (m[0], m[1]))
        batch = moves[: state.workers]
        results = state.run("greedy", [m[2] for m in batch])
        for m, r in zip(batch, results, strict=False):
            if not state.fits(r) or state.cost(r) >= state.cost(best):
                rejected.add(m[3])
        if not results:
            return


def fill_front(state: SearchState, most: int = FILL) -> None:
    """Spend trials left over on the thresholds bisection skipped: the steps between
    safe and cheap that verification walks down when the search part could not tell
    them apart (see auto/verify.py). Only assignments not tried yet, evenly spread over
    the distinct ones (neighbouring thresholds often give the same configuration)."""
    thresholds = sorted({d for s in state.risk.values() for d in s.values() if d < 1e9})
    fresh: list[dict[str, int]] = []
    for t in thresholds:
        config = assign(state, t)
        if _key(config) not in state.seen and _key(config) not in {_key(c) for c in fresh}:
            fresh.append(config)
    take = min(most, state.trials_left, len(fresh))
    if take <= 0:
        return
    picks = sorted({round(i * (len(fresh) - 1) / max(take - 1, 1)) for i in range(take)})
    state.run("fill", [fresh[i] for i in picks])


def predict_risk(state: SearchState, r: TrialResult) -> float | None:
    """The sum of each compressed layer's lone risk at its rung (None when a layer's
    was not probed): additive, the first-order estimate of a configuration's risk."""
    total = 0.0
    for name, rung in r.config.items():
        if not rung:
            continue
        lone = state.risk.get(name, {}).get(rung)
        if lone is None or lone == float("inf"):
            return None
        total += max(lone, 0.0)
    return total
