"""A file-size budget for codebooks (``--target-size R``): fewer bits where the task loses least.

b-bit codes cost b/32 of the float weights, but the file also holds the codebooks, channel
scales, 8-bit vector tables and the graph: a MiniLM's 4-bit codes alone are 0.1245 of its
fp32 file, the whole file 0.128. Fitting a size asks some tensors to drop below b bits, and
which ones is a task question: a bit off the word embedding costs a sentence encoder 0.8
recall points, a bit off one feed-forward matrix nothing measurable.

The plan is greedy over one-bit steps (never below 2 bits, never a tensor whose bits a
recipe or the small-saving rule fixed): each step's cost is what the task loses on the
calibration data when that one tensor takes a bit less (metrics.Judge's gauge, everything
else at the asked bits, so costs add up), and the cheapest step per byte still needed is
taken until the estimate fits. Without data, a step's cost is the relative weight error it
adds (said so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.graph.weights import Weight
from onnxcomp.io.data import DataSource
from onnxcomp.methods.codebook.pack import OVERHEAD, choose
from onnxcomp.methods.weights.float16_vectors import MIN_ELEMENTS as HALF_MIN
from onnxcomp.methods.weights.float16_vectors import exact_enough
from onnxcomp.numerics.codebook import Codebook

logger = logging.getLogger(__name__)

MIN_BITS = 2
# Task trials (one session each) the plan may spend; the steps the weight-error proxy ranks
# first are measured.
MAX_TRIALS = 24
# Unmeasured steps measured before each pick (of those the proxy ranks first).
LOOKAHEAD = 6
# Calibration samples a trial runs (the repair guard's sample count).
MAX_SAMPLES = 64
# Graph bytes a codebook-decoded weight adds beyond its packing's decode (which choose()
# counts): the Gather, a scale's Mul, their names; measured 130-150 B a tensor on the corpus
# transformers (4 x OVERHEAD made the estimate 6 KB high on both, a lower-bit step too many).
DECODE_BYTES = 2 * OVERHEAD


def float_bytes(array: np.ndarray) -> int:
    """Bytes of a float vector once the weight-storage step has stored it (float16 where
    that is exact enough: float16_vectors.py)."""
    if array.size >= HALF_MIN and exact_enough(array):
        return array.size * 2
    return int(array.nbytes)


def stored_bytes(book: Codebook) -> int:
    """What the packed file holds for ``book``: codes, values and channel scales."""
    form = choose(book.codes, 0 if book.zero_code else None, True)
    scale = 0 if book.scale is None else float_bytes(book.scale)
    return form.nbytes + float_bytes(book.values) + scale + DECODE_BYTES


def relative_energy(original: np.ndarray, book: Codebook) -> float:
    """||decoded - original||^2 / ||original||^2: the output error energy on white inputs."""
    o = original.astype(np.float64)
    den = float(np.vdot(o, o))
    d = book.decode().astype(np.float64) - o
    return float(np.vdot(d, d)) / den if den else 0.0


def later_savings(model: ir.Model, weights: set[str]) -> int:
    """Bytes the weight-storage step will take off the float vectors no codebook replaces
    (stored float16): the estimate would otherwise buy them with bits."""
    saved = 0
    for graph in [model.graph, *model.graph.subgraphs()]:
        for value in graph.initializers.values():
            t = value.const_value
            if value.name in weights or t is None or value.dtype != ir.DataType.FLOAT:
                continue
            if sum(d > 1 for d in t.shape.numpy()) == 1:
                saved += int(t.nbytes) - float_bytes(t.numpy())
    return saved


@dataclass
class Step:
    """One tensor one bit lower: the bytes it saves and what it costs."""

    name: str
    bits: int
    book: Codebook
    saving: int
    proxy: float  # added relative weight error energy
    cost: float | None = None  # added task drop (gauge) on the calibration data


@dataclass
class Plan:
    bits: dict[str, int] = field(default_factory=dict)  # tensors below their asked bits
    books: dict[str, Codebook] = field(default_factory=dict)  # their weight-only fits
    estimate: int = 0  # the packed file's estimated bytes after the plan
    target: int = 0
    measure: str = ""  # what ranked the steps
    trials: int = 0

    def note(self, ratio: float, asked: int, source_bytes: int) -> str:
        est = self.estimate / source_bytes if source_bytes else 0.0
        if not self.bits:
            return (
                f"--target-size {ratio:g}: the {asked}-bit file is estimated at {est:.4f} of "
                "the input: no tensor needed fewer bits"
            )
        names = ", ".join(f"{n} ({b}-bit)" for n, b in sorted(self.bits.items()))
        fits = "fits" if self.estimate <= self.target else "still over: no cheaper step left"
        return (
            f"--target-size {ratio:g}: {len(self.bits)} tensor(s) below {asked} bits, chosen "
            f"by {self.measure}: {names}; estimated file {est:.4f} of the input ({fits})"
        )


class TaskTrials:
    """The task's drop when given tensors take given decoded values, everything else at
    its ``base`` values: each trial one onnxruntime session over the calibration data."""

    def __init__(
        self, model: ir.Model, base: dict[str, np.ndarray], data: DataSource, options: Any
    ) -> None:
        from onnxcomp.metrics.judge import Reference
        from onnxcomp.runtime.session import make_session

        ref = make_session(model)
        inputs = {i.name for i in ref.get_inputs()}
        feeds: list[dict[str, np.ndarray]] = []
        seen = 0
        for batch in data:
            feeds.append({k: v for k, v in batch.feed.items() if k in inputs})
            seen += batch.size
            if seen >= MAX_SAMPLES:
                break
        self.reference = Reference(ref, feeds, options)
        self.model = model.clone()
        self.values = {
            v.name: v
            for g in [self.model.graph, *self.model.graph.subgraphs()]
            for v in g.initializers.values()
            if v.name in base
        }
        for name, array in base.items():
            self._set(name, array)
        self.label = ""  # the gauge's name, from the first verdict
        self.base = self._drop()

    def _set(self, name: str, array: np.ndarray) -> None:
        self.values[name].const_value = ir.tensor(array.astype(np.float32), name=name)

    def _drop(self) -> float:
        drop, self.label = self.reference.verdict(self.model).gauge()
        return drop

    def cost(self, name: str, trial: np.ndarray, base: np.ndarray) -> float:
        self._set(name, trial)
        try:
            return self._drop() - self.base
        finally:
            self._set(name, base)


def _per_byte(step: Step, cost: float, need: int) -> tuple[float, float]:
    """Cost per byte still needed: a step saving more than the deficit gets no credit for
    the bytes nobody asked for (else the biggest tensor always looks cheapest); at equal
    cost, the smaller weight error."""
    return (cost / min(step.saving, need), step.proxy)


def plan_bits(
    weights: list[Weight],
    books: dict[str, Codebook],
    originals: dict[str, np.ndarray],
    free: set[str],
    bits: dict[str, int],
    fit: Callable[[Weight, np.ndarray, int], Codebook],
    *,
    estimate: int,
    target: int,
    trials: TaskTrials | None,
) -> Plan:
    """Tensors of ``free`` a bit (or more) lower until ``estimate`` fits ``target``.

    ``books``: every weight's weight-only fit at its ``bits``; ``estimate``: the packed
    file's bytes with them."""
    plan = Plan(estimate=estimate, target=target)
    plan.measure = "the relative weight error each adds (no --calib)"
    by_name = {w.name: w for w in weights}
    current = {n: books[n] for n in free}
    steps: dict[str, Step] = {}
    charged: dict[str, float] = {}  # task cost of a tensor's steps taken so far
    spent = 0

    def next_step(name: str) -> Step | None:
        b = plan.bits.get(name, bits[name]) - 1
        if b < MIN_BITS:
            return None
        book = fit(by_name[name], originals[name], b)
        saving = stored_bytes(current[name]) - stored_bytes(book)
        if saving <= 0:
            return None
        added = relative_energy(originals[name], book) - relative_energy(
            originals[name], current[name]
        )
        return Step(name, b, book, saving, max(added, 0.0))

    for name in sorted(free):
        step = next_step(name)
        if step is not None:
            steps[name] = step
    while plan.estimate > target and steps:
        need = plan.estimate - target
        ranked = sorted(steps.values(), key=lambda s: _per_byte(s, s.proxy, need))
        if trials is not None:
            for s in ranked[:LOOKAHEAD]:
                if s.cost is None and spent < MAX_TRIALS:
                    # against the all-at-asked-bits base: costs add up across tensors
                    s.cost = trials.cost(s.name, s.book.decode(), books[s.name].decode())
                    s.cost -= charged.get(s.name, 0.0)
                    spent += 1
            ranked = [s for s in ranked if s.cost is not None]
            if not ranked:
                break  # nothing measured is left; the proxy alone would not be the task
            plan.measure = f"{trials.label} on the calibration data"
            ranked.sort(key=lambda s: _per_byte(s, max(s.cost or 0.0, 0.0), need))
        take = ranked[0]
        plan.bits[take.name] = take.bits
        plan.books[take.name] = take.book
        plan.estimate -= take.saving
        current[take.name] = take.book
        charged[take.name] = charged.get(take.name, 0.0) + max(take.cost or 0.0, 0.0)
        logger.info(
            "codebook budget: %s -> %d bits (-%d B, cost %s)",
            take.name, take.bits, take.saving, take.cost if take.cost is not None else take.proxy,
        )  # fmt: skip
        del steps[take.name]
        step = next_step(take.name)
        if step is not None:
            steps[take.name] = step
    plan.trials = spent
    return plan
