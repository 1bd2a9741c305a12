"""The int8 measure step: time candidates against the float model, keep float what does
not pay.

The int8 model is timed against the float one in onnxruntime (1 thread, runs
interleaved) and their outputs compared. When it is slower than float or loses fidelity,
op families are dropped one at a time (shape ops first, Conv last) as long as each drop
measurably helps; a drop is judged against the incumbent in the same timing run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.io.data import DataSource
from onnxcomp.metrics import Judge

if TYPE_CHECKING:
    from onnxcomp.methods.int8.report import Int8Report

# Order in which families are tried out of int8 when the model got slower or worse:
# cheap data movement first, the big GEMMs last.
DROP_ORDER = (
    "dynamic", "shape", "concat", "mul", "add", "pool", "activation", "matmul_act", "gemm",
    "matmul", "conv", "skip_layernorm",
)  # fmt: skip
# Steps that *add* a switch instead of dropping a family: "dynamic" quantizes the inputs
# of weight MatMul/Gemm at run time (methods/int8/dynamic_matmul.py) instead of with a
# calibrated Q/DQ pair; "skip_layernorm" lets onnxruntime fuse residual Add + LayerNorm
# (methods/int8/layernorm_guard.py says why it is blocked by default).
SWITCHES = frozenset({"dynamic", "skip_layernorm"})
# A fidelity loss (a continuous task metric's drop, or the worst component's error) above this
# triggers the search: int8 transformers sit near 0.99, and dropping op families rarely
# buys fidelity there, only time.
FIDELITY_TOLERANCE = 2e-2
COMPUTE_FAMILIES = frozenset({"conv", "gemm", "matmul"})
CHEAP_FAMILIES = frozenset(DROP_ORDER) - COMPUTE_FAMILIES - SWITCHES
SPEEDUP_MARGIN = 0.97  # a drop must make the model at least 3% faster to count
MAX_PASSES = 3  # rounds over DROP_ORDER while the model is still slower than float
MIN_ROUNDS = 12  # timing rounds before a measurement may stop early
FIDELITY_SAMPLES = 16  # calibration samples candidates are judged on ...
FIDELITY_RUNS = 8  # ... in at most this many runs
# Bumped when how candidates are judged changes: cached decisions of an older Judge go.
JUDGE_REVISION = 3
# Inputs up to this size are judged in one batch (see _joined).
JOINED_BYTES = 1 << 20


def _next_trial(
    step: str, families: frozenset[str], switchable: frozenset[str], slow: bool
) -> frozenset[str] | None:
    """The candidate one greedy step tries, or None when the step does not apply."""
    if step in SWITCHES:
        if step not in switchable or step in families:
            return None
        if step == "dynamic" and not families & {"matmul", "gemm"}:
            return None  # nothing left for run-time ranges: the same graph again
        return families | {step}
    if step not in families or (not slow and step in COMPUTE_FAMILIES):
        return None  # a fast model keeps its int8 GEMMs: fidelity never buys speed back
    return _without(families, frozenset({step}))


def tune(families, model, plan, build, bench: Bench, report: Int8Report, switchable):
    """Greedy: drop a family when that makes the model measurably faster or closer.

    Cheap families (shape, add, mul, concat, pool, activation, activation x activation
    MatMul) are tried even when int8 already beats float: a requantizing Add or Reshape
    around attention can cost more than it saves (the MiniLM export ran 3x faster with
    its Adds float). The big GEMMs are only tried when the model is slower than float.
    A slow model first drops all its cheap families in one trial: when even that is
    neither faster nor closer, no single one of them is tried that pass (ShuffleNet's
    int8 Convs were 2.2x slower than float; its shape, concat and pool trials were
    wasted)."""
    state = _Incumbent(families, model, plan, bench)
    report.trials.append(
        {"families": sorted(families), "latency_ratio": state.ratio, "fidelity": state.cos}
    )
    tried: set[frozenset[str]] = {frozenset(families)}
    for _ in range(MAX_PASSES):  # once the Convs went float, a lone int8 Add may not pay
        changed = False
        cheap_matters = True
        cheap = state.families & CHEAP_FAMILIES
        if state.ratio > SPEEDUP_MARGIN and len(cheap) > 1:
            probe = _without(state.families, cheap)
            if probe not in tried:
                tried.add(probe)
                cheap_matters = state.judge(probe, build, report, fam=None) is not None
        for fam in DROP_ORDER:
            slow = state.ratio > SPEEDUP_MARGIN
            if fam in CHEAP_FAMILIES and not cheap_matters:
                continue
            trial = _next_trial(fam, state.families, switchable, slow)
            if trial is None or trial in tried:
                continue
            tried.add(trial)
            verdict = state.judge(trial, build, report, fam)
            if verdict is not None:
                state.accept(fam, verdict, report)
                changed = True
        if not changed or state.ratio <= SPEEDUP_MARGIN:
            break
    report.latency_ratio, report.fidelity = round(state.ratio, 3), round(state.cos, 6)
    report.busy = bench.busy()
    report.fidelity_metric = bench.metric
    return state.families, state.model, state.plan


def _without(families: frozenset[str], dropped: frozenset[str]) -> frozenset[str]:
    trial = families - dropped
    if "dynamic" in trial and not trial & {"matmul", "gemm"}:
        trial -= {"dynamic"}
    return trial


@dataclass
class _Verdict:
    families: frozenset[str]
    model: ir.Model
    plan: Any
    session: Any
    ratio: float
    cos: float
    faster: bool


class _Incumbent:
    """The best candidate so far and how a new one is judged against it."""

    def __init__(self, families, model, plan, bench: Bench) -> None:
        self.families, self.model, self.plan, self.bench = families, model, plan, bench
        self.session = bench.session(model)
        self.ratio, self.cos = bench.latency(self.session), bench.fidelity(self.session)

    def judge(self, trial, build, report: Int8Report, fam: str | None) -> _Verdict | None:
        """Build and measure ``trial``; a verdict when it beats the incumbent, else None."""
        m, p = build(trial)
        session = self.bench.session(m)
        c = self.bench.fidelity(session)
        slow = self.ratio > SPEEDUP_MARGIN
        loose = 1.0 - self.cos > FIDELITY_TOLERANCE
        halves_error = loose and (1.0 - c) < 0.5 * (1.0 - self.cos)
        # Both candidates timed in one interleaved run: a ratio from an earlier run
        # carries that run's noise (on a loaded machine, more than the 3% margin).
        self.ratio, r = self.bench.latency(self.session, session)
        entry = {"families": sorted(trial), "latency_ratio": r, "fidelity": c}
        report.trials.append(entry if fam is not None else {**entry, "probe": "cheap"})
        # Slower than float, any measurable gain counts; already faster, a cheap family
        # only goes float when that keeps the output as close. Measurable: the paired
        # runs put the gain past the 3% band by 3 standard errors. A gain the noise
        # cannot tell from the band keeps the incumbent, so a loaded machine, whose
        # noise is wider, makes the decision a quiet one would (not a coin toss).
        faster = self.bench.clearly() < 0 and (slow or c >= self.cos - FIDELITY_TOLERANCE / 10)
        # Fidelity alone never buys a slower model: what loses accuracy *without a
        # speed gain* goes float (on vgg19 a float classifier cost 30% of the speed).
        closer = halves_error and self.bench.clearly() <= 0
        if faster or closer:
            return _Verdict(trial, m, p, session, r, c, faster)
        return None

    def accept(self, fam: str, v: _Verdict, report: Int8Report) -> None:
        what = "slower" if v.faster else "less accurate"
        before, after = ("without", "with") if fam in SWITCHES else ("with", "without")
        report.families_dropped[fam] = (
            f"{what} {before} it: {self.ratio:.2f}x float latency, fidelity {self.cos:.5f}; "
            f"{v.ratio:.2f}x, fidelity {v.cos:.5f} {after}"
        )
        self.families, self.model, self.plan = v.families, v.model, v.plan
        self.session, self.ratio, self.cos = v.session, v.ratio, v.cos


class Bench:
    """Latency and fidelity of candidates against the float model, same process.

    Fidelity is 1 - the drop a metrics.Judge sees on up to ``FIDELITY_SAMPLES``
    calibration samples: the task's metric when compress was given one (``--task``,
    ``--metric-fn``) or the outputs show one, else the worst output component, so a
    head whose class scores int8 broke is not hidden by its box coordinates."""

    def __init__(
        self,
        reference: bytes | str,
        data: DataSource,
        *,
        budget: float = 0.3,
        base_dir: str | None = None,
        options: Any = None,
    ) -> None:
        self.budget = budget
        self.options = options
        try:
            self.ref = _session(reference, base_dir)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxcompError(
                f"the float model does not run in onnxruntime, so int8 cannot be measured "
                f"against it ({first}); use --no-measure"
            ) from None
        names = {i.name for i in self.ref.get_inputs()}
        self.feeds: list[dict[str, np.ndarray]] = []
        seen = 0
        for batch in data:
            self.feeds.append({k: v for k, v in batch.feed.items() if k in names})
            seen += batch.size
            if seen >= FIDELITY_SAMPLES or len(self.feeds) >= FIDELITY_RUNS:
                break
        if not self.feeds:
            raise OnnxcompError("calibration data is empty")
        self.timing_feed = _one_sample(self.feeds[0], self.ref)
        self.feeds = _joined(self.feeds, self.ref)
        self.ref_out = [self.ref.run(None, f) for f in self.feeds]
        self.metric = self._judge(self.ref_out).gauge()[1]

    def session(self, model: ir.Model):
        return _session(model)

    def _judge(self, outputs: list[list[Any]]):
        judge = Judge.for_session(self.ref, self.options)
        for ref, new, feed in zip(self.ref_out, outputs, self.feeds, strict=True):
            judge.update(ref, new, feed=feed)
        return judge.verdict()

    def fidelity(self, session) -> float:
        """1 - the drop on the calibration samples (1.0: the float model's)."""
        return 1.0 - self._judge([session.run(None, f) for f in self.feeds]).gauge()[0]

    cpu_seconds = 0.0  # this thread's CPU time over the timed runs ...
    wall_seconds = 0.0  # ... and their wall time: the share says how busy the machine is

    def busy(self) -> str:
        """A note when this thread got clearly less than the wall time it waited."""
        if self.wall_seconds <= 0 or self.cpu_seconds >= 0.8 * self.wall_seconds:
            return ""
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        return (
            f"the machine is busy (this thread got {self.cpu_seconds / self.wall_seconds:.0%} "
            f"of the wall time, load average {load:.1f}): timings used its CPU time"
        )

    pair = (0.0, float("inf"))  # the last decisive pair's paired log-ratio (median, s.e.)

    def latency(self, *sessions) -> Any:
        """Each candidate's latency over float latency, 1 thread, timed together."""
        timing = _latency_ratios(self.ref, sessions, self.timing_feed, self.budget)
        ratios, cpu, wall, self.pair = timing
        self.cpu_seconds += cpu
        self.wall_seconds += wall
        rounded = [round(r, 3) for r in ratios]
        return rounded[0] if len(rounded) == 1 else rounded

    def clearly(self) -> int:
        """-1 when the last candidate is faster than the one before it by more than the
        3% band beyond 3 standard errors, 1 when slower by as much, else 0."""
        mid, se = self.pair
        edge = -np.log(SPEEDUP_MARGIN)
        if mid + 3.0 * se < -edge:
            return -1
        return 1 if mid - 3.0 * se > edge else 0


def _session(model: bytes | str | ir.Model, base_dir: str | None = None):
    from onnxcomp.runtime.session import make_session

    return make_session(model, threads=1, base_dir=base_dir)


def _one_sample(feed: dict[str, np.ndarray], session) -> dict[str, np.ndarray]:
    """Latency at batch 1 when the batch axis is free (what a service runs)."""
    out = {}
    for spec in session.get_inputs():
        value = feed[spec.name]
        dynamic = spec.shape and not isinstance(spec.shape[0], int)
        out[spec.name] = value[:1] if dynamic and value.ndim and value.shape[0] > 1 else value
    return out


def _joined(feeds: list[dict[str, np.ndarray]], session) -> list[dict[str, np.ndarray]]:
    """The fidelity feeds as one batch when the batch axis is free and the inputs small.

    Run-time ("dynamic") activation ranges are the batch's own, so a sample's int8 output
    depends on what else is in its batch: the widest batch is their worst case (MiniLM-L6
    with SmoothQuant: cosine 0.9977 at batch 1, 0.9953 at 16, where static ranges give
    0.9969 at any batch). Judged on batches of 4, run-time ranges looked closer than
    static ones and were chosen; judged on all samples at once, they are not."""
    if len(feeds) < 2 or sum(a.nbytes for f in feeds for a in f.values()) > JOINED_BYTES:
        return feeds
    for spec in session.get_inputs():
        if not spec.shape or isinstance(spec.shape[0], int):
            return feeds
    names = list(feeds[0])
    if any(list(f) != names or any(f[n].ndim == 0 for n in names) for f in feeds):
        return feeds
    if any(f[n].shape[1:] != feeds[0][n].shape[1:] for f in feeds for n in names):
        return feeds
    return [{n: np.concatenate([f[n] for f in feeds]) for n in names}]


def _latency_ratios(
    ref, cands, feed, budget: float
) -> tuple[list[float], float, float, tuple[float, float]]:
    """Median run time of each of ``cands`` over ``ref``, runs interleaved so noise
    cancels; with the CPU and wall seconds they took.

    A run's time is the calling thread's CPU time: with one intra-op thread onnxruntime
    computes on it, so time another process takes from this core is not counted (on a
    loaded 2-core machine wall time put a 0.59x-speed int8 model ahead of float).

    Runs fill ``budget`` seconds per candidate; a model slower than that gets 3 rounds,
    each long enough to time well. They stop sooner once the pair the measure step decides
    on (the last candidate against the first, or a lone candidate against float) is
    settled: its paired ratio is clearly outside or clearly inside the 3% band
    (``_settled``). Most candidates of a small model are settled in a quarter of the time.
    """
    sessions = [ref, *cands]
    for sess in sessions:  # warm-up: first runs allocate
        sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    decisive = (len(sessions) - 1, 1 if len(cands) > 1 else 0)
    cpu_start, wall_start = time.thread_time(), time.perf_counter()
    stop = cpu_start + budget * len(cands)  # the budget is CPU time too: load cannot cut it
    while len(times[0]) < 3 or (time.thread_time() < stop and len(times[0]) < 200):
        for sess, out in zip(sessions, times, strict=True):
            t = time.thread_time()
            sess.run(None, feed)
            out.append(time.thread_time() - t)
        rounds = len(times[0])
        settled = rounds >= MIN_ROUNDS and rounds % 4 == 0
        if settled and _settled(times[decisive[0]], times[decisive[1]]):
            break
    base = max(float(np.median(times[0])), 1e-9)
    cpu, wall = time.thread_time() - cpu_start, time.perf_counter() - wall_start
    ratios = [float(np.median(t)) / base for t in times[1:]]
    return ratios, cpu, wall, _paired(times[decisive[0]], times[decisive[1]])


def _paired(cand: list[float], base: list[float]) -> tuple[float, float]:
    """The paired log-ratio's median and its standard error (of a median, from the
    spread: 1.25 * 1.48 * MAD / sqrt(n))."""
    logs = np.log(np.maximum(cand, 1e-12)) - np.log(np.maximum(base, 1e-12))
    mid = float(np.median(logs))
    return mid, 1.2533 * 1.4826 * float(np.median(np.abs(logs - mid))) / np.sqrt(logs.size)


def _settled(cand: list[float], base: list[float]) -> bool:
    """Whether the paired log-ratio's median is off the band edges by 3 standard errors."""
    mid, se = _paired(cand, base)
    return abs(abs(mid) - -np.log(SPEEDUP_MARGIN)) > 3.0 * se
