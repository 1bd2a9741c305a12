"""``--recover distill``: the compressed graph trained against the original, last step.

The teacher (the prepared model before any compression) runs in onnxruntime once over
the calibration samples; a seeded quarter of them is held back. The student (the
compressed graph as a torch module, student.py) trains on the rest; its values are
written back into a copy of the same graph by name, and the copy is kept only when the
Judge's drop on the held-back samples improves on the model it was given (as
methods/recover/guard.py does for bias correction): the plain compressed one, or after
``--recover gptq,distill`` the closed-form repair's result, which training starts from.
Torch is imported only when the pass runs (``pip install 'onnxcomp[distill]'``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph import opaque_types
from onnxcomp.io.data import DataSource, input_specs
from onnxcomp.methods.distill.forms import find_forms, write_back
from onnxcomp.methods.distill.mixup import Mixer, mixable
from onnxcomp.methods.distill.samples import collect
from onnxcomp.methods.distill.teacher import TeacherStore, batch_axes
from onnxcomp.metrics import Judge
from onnxcomp.metrics.judge import Verdict, declared_shapes
from onnxcomp.runtime.session import make_session

if TYPE_CHECKING:
    from onnxcomp.options import CompressOptions
    from onnxcomp.passes.report import CompressReport

logger = logging.getLogger(__name__)

HELD_BACK = 0.25
MIN_SAMPLES = 4
BATCH = 32
SEED = 0


def require_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise OnnxcompError("--recover distill needs PyTorch: pip install 'onnxcomp[distill]'")


def split(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-back) sample indices: a seeded quarter held back, both sorted."""
    if n < MIN_SAMPLES:
        raise OnnxcompError(
            f"--recover distill needs at least {MIN_SAMPLES} calibration samples, got {n}"
        )
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * HELD_BACK))
    return np.sort(order[held:]), np.sort(order[:held])


def run(
    session: Any, feeds: dict[str, np.ndarray], batch: int, swap: Any = None
) -> list[np.ndarray]:
    """The session's outputs over all samples, ``batch`` at a time (a fixed batch size
    drops a ragged tail; callers size the samples to it), samples first (``swap[i]``:
    output i is time-major)."""
    n = len(next(iter(feeds.values())))
    chunks = []
    for start in range(0, n, batch):
        part = {k: v[start : start + batch] for k, v in feeds.items()}
        outs = session.run(None, part)
        chunks.append([np.swapaxes(o, 0, 1) if swap and swap[i] else o for i, o in enumerate(outs)])
    return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(chunks[0]))]


class TeacherPass(ir.passes.FunctionalPass):
    """A repair trained against the original model (distill, blockwise): what both take."""

    rung = ""  # the --recover method

    def __init__(
        self,
        options: CompressOptions,
        data: Callable[[], DataSource],
        teacher: Callable[[], ir.Model | None],
        report: CompressReport | None = None,
        *,
        reduced: bool = False,
        start: str | None = None,
    ) -> None:
        super().__init__()
        self.options, self.data, self.teacher = options, data, teacher
        self.report, self.reduced = report, reduced
        # The closed-form repair that ran before (--recover gptq,distill): the model this
        # pass receives, and the one it must beat, is that repair's result.
        self.start = start
        self.kept = False
        self.figures: dict[str, float] = {}
        self.ragged = ""  # which samples were used when their shapes differ
        self.swap: set[str] = set()  # time-major outputs, stored samples first
        self.mixed = False  # distill trained on blended inputs (mixup.py)

    def samples(self, model: ir.Model) -> tuple[dict[str, np.ndarray], int | None, int]:
        """(stacked calibration feeds, the model's fixed batch or None, sample count), cut
        to whole batches when the batch is fixed."""
        specs = [s for s in input_specs(model) if s.name]
        fixed = specs[0].fixed_batch if specs else None
        feeds, self.ragged = collect(self.data(), [s.name for s in specs])
        n = len(next(iter(feeds.values())))
        if fixed is not None:
            n -= n % fixed
            feeds = {k: v[:n] for k, v in feeds.items()}
        return feeds, fixed, n

    @property
    def after(self) -> str:
        """The note's name for the trained rung's start after a closed-form repair
        (" from the gptq result"); empty without one."""
        return f" from the {self.start} result" if self.start else ""

    def say(self, what: str, changed: int) -> None:
        """The run's note, ending in whether the guard kept it."""
        if self.kept:
            note = f"{what}; kept ({changed} tensors changed, {self.figures['seconds']:.1f} s)"
        elif self.start:
            note = f"{what}; not kept: the {self.start} result is written"
        else:
            note = f"{what}; not kept: the plain compressed model is written"
        logger.info(note)
        if self.report is not None:
            if self.start:
                self.report.notes.append(self._start_note())
            self.report.notes.append(note)

    def _start_note(self) -> str:
        """What the closed-form rung before this one did, in one line."""
        assert self.report is not None and self.start is not None
        records = [r for r in self.report.recovered if r.method == self.start]
        pairs = [(r.baseline, r.error) for r in records if r.baseline and r.error is not None]
        median = ""
        if pairs:
            before = float(np.median([b for b, _ in pairs]))
            after = float(np.median([a for _, a in pairs]))
            median = f" (output error {before:.3g} plain -> {after:.3g}, median)"
        return (
            f"recover {self.start},{type(self).rung}: {self.start} repaired "
            f"{len(records)} layers{median}, then {type(self).rung} trained from its values"
        )


class DistillPass(TeacherPass):
    rung = "distill"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxcomp.methods.distill.optable import unsupported

        bad = unsupported(model.graph)
        if bad:
            raise OnnxcompError(
                f"--recover distill cannot differentiate op(s) {', '.join(bad)} of this graph"
            )
        require_torch()
        teacher = self.teacher()
        assert teacher is not None, "the teacher was not snapshotted"
        store = TeacherStore()
        try:
            return self._distill(model, teacher, store)
        finally:
            store.close()

    def _distill(
        self, model: ir.Model, teacher: ir.Model, store: TeacherStore
    ) -> ir.passes.PassResult:
        options = self.options
        start = time.perf_counter()
        seed = int(getattr(options, "seed", SEED))
        feeds, fixed, n = self.samples(model)
        train_idx, held_idx = split(n, seed)
        batch = fixed or BATCH
        if fixed is not None:  # whole batches on both sides
            train_idx = train_idx[: len(train_idx) - len(train_idx) % fixed]
            held_idx = held_idx[: max(fixed, len(held_idx) - len(held_idx) % fixed)]
        train_feeds = {k: v[train_idx] for k, v in feeds.items()}
        held_feeds = {k: v[held_idx] for k, v in feeds.items()}
        del feeds
        hints = list(getattr(options, "distill_hint", ()) or ())
        ref = make_session(teacher)
        out_names = [o.name for o in ref.get_outputs()]
        hinted = make_session(_with_outputs(teacher, model, hints)) if hints else ref
        swap = batch_axes(hinted, train_feeds, out_names + hints, fixed)
        teacher_train = store.run(hinted, train_feeds, batch, out_names + hints, swap)
        teacher_held = store.run(hinted, held_feeds, batch, out_names + hints, swap)

        from onnxcomp.methods.distill.student import Student
        from onnxcomp.methods.distill.train import Plan, stderr_progress, train

        targets = self._targets(model, out_names, hints, teacher_train, train_feeds, True)
        held_targets = self._targets(model, out_names, hints, teacher_held, held_feeds, False)
        swapped = {(out_names + hints)[i] for i in swap}
        for t in (*targets, *held_targets):  # the student's value is [T, N, ...]: swapped
            t.time_major = t.name in swapped
        self.swap = swapped & set(out_names)
        student = Student(model, find_forms(model, self.reduced), keep_zeros=self.options.prunes)
        show = getattr(options, "distill_progress", False) or (
            getattr(options, "progress", False) and sys.stderr.isatty()
        )
        # Minibatches of BATCH whatever the model's batch (a fixed batch of 1 trained on
        # one sample a step: too noisy for --lr, and no contrast for an embedding).
        minibatch = max(fixed, BATCH - BATCH % fixed) if fixed else BATCH
        plan = Plan(
            options.distill_steps, options.lr, minibatch, seed=seed, fixed=fixed,
            time_limit=getattr(options, "time_limit", None),
            progress=stderr_progress if show else None,
        )  # fmt: skip
        self.mixed = bool(getattr(options, "distill_mix", False)) and mixable(train_feeds, targets)
        if self.mixed:
            named = out_names + hints
            plan.augment = Mixer(hinted, named, swap, train_feeds, targets, fixed)
        outcome = train(student, train_feeds, targets, (held_feeds, held_targets), plan)
        candidate = _clone(model)
        changed = write_back(candidate, student.stored_values())
        held_out = teacher_held[: len(out_names)]
        plain_v = self._verdict(model, out_names, held_out, held_feeds, batch, ref)
        cand_v = self._verdict(candidate, out_names, held_out, held_feeds, batch, ref)
        p_gauge, c_gauge = plain_v.gauge()[0], cand_v.gauge()[0]
        self.kept = bool(changed) and (
            cand_v.drop < plain_v.drop or (cand_v.drop == plain_v.drop and c_gauge < p_gauge)
        )
        self.figures = {
            "plain_drop": plain_v.drop, "distilled_drop": cand_v.drop, "plain_gauge": p_gauge,
            "distilled_gauge": c_gauge, "loss_first": outcome.first,
            "held_first": outcome.held_first, "held_best": outcome.held_best,
            "best_step": outcome.best_step, "steps_run": outcome.steps_run,
            "seconds": time.perf_counter() - start, "mapped_bytes": store.mapped,
        }  # fmt: skip
        self.outcome = outcome
        kinds = [t.describe() for t in targets]
        self._note(kinds, plain_v, cand_v, len(train_idx), len(held_idx), len(changed), seed)
        return ir.passes.PassResult(candidate if self.kept else _clone(model), modified=self.kept)

    def _targets(
        self, model: ir.Model, names: list[str], hints: list[str], teacher: list[np.ndarray],
        feeds: dict[str, np.ndarray], in_place: bool,
    ) -> list[Any]:  # fmt: skip
        from onnxcomp.methods.distill.targets import choose, make_target, parse_overrides
        from onnxcomp.metrics.tasks import detect

        options = self.options
        outputs = dict(zip(names, teacher[: len(names)], strict=True))
        floats = {k: a for k, a in outputs.items() if a.dtype.kind == "f"}
        task = getattr(options, "task", None)
        if task is None and getattr(options, "metric_fn", None) is None:
            found = detect({k: v[: min(len(v), 64)] for k, v in outputs.items()})
            task = found[0] if found else None
        softmax_inputs = {}
        for value in model.graph.outputs:
            producer = value.producer()
            if producer is not None and producer.op_type == "Softmax" and producer.inputs[0]:
                softmax_inputs[value.name or ""] = producer.inputs[0].name or ""
        overrides = parse_overrides(tuple(getattr(options, "distill_loss", ()) or ()))
        # The training part's arrays are converted in place; the held-back part's are
        # read by the Judge as they are.
        settings = options.task_settings()
        targets = choose(
            floats, task, softmax_inputs, overrides, in_place=in_place, blank=settings.blank,
            feed=feeds, mask=settings.mask,
        )  # fmt: skip
        for name, array in zip(hints, teacher[len(names) :], strict=True):
            hint = make_target(name, "mse", array)
            hint.kind = "hint"
            targets.append(hint)
        return targets

    def _verdict(
        self, model: ir.Model, names: list[str], teacher: list[np.ndarray],
        feeds: dict[str, np.ndarray], batch: int, ref: Any,
    ) -> Verdict:  # fmt: skip
        options = self.options
        # Both sides samples first (the teacher's as stored): the task reads them so.
        settings = replace(options.task_settings(), time_major=False) if self.swap else None
        declared = declared_shapes(ref)
        for name in self.swap:
            d = declared.get(name)
            declared[name] = (d[1], d[0], *d[2:]) if d is not None and len(d) > 1 else d
        judge = Judge(
            names, options.task, settings=settings or options.task_settings(),
            metric_fn=options.metric_fn, declared=declared,
        )  # fmt: skip
        outs = run(make_session(model), feeds, batch, self.swap and [n in self.swap for n in names])
        judge.update(teacher, outs, feed=feeds)
        return judge.verdict()

    def _note(
        self, kinds: list[str], plain: Verdict, cand: Verdict, n_train: int, n_held: int,
        changed: int, seed: int,
    ) -> None:  # fmt: skip
        o = self.outcome
        stop = {
            "steps": f"{o.steps_run} steps",
            "patience": f"stopped at step {o.steps_run}: the held-back loss stopped improving",
            "time limit": f"stopped by --time-limit at step {o.steps_run} of "
            f"{self.options.distill_steps}, best values so far kept",
        }[o.stopped]
        if o.lr and o.lr != self.options.lr:
            stop += f", lr {o.lr:.3g} (the first measurement at --lr {self.options.lr:g} was worse)"
        mixed = ", blended in pairs each step" if self.mixed else ""
        what = (
            f"distill{self.after} ({stop}, seed {seed}, on {n_train} samples"
            f"{' of ' + self.ragged if self.ragged else ''}{mixed}; {'; '.join(kinds)}; "
            f"held-back loss {o.held_first:.4g} -> {o.held_best:.4g}, best at step "
            f"{o.best_step}): {plain.metric} drop {plain.drop:.4g} -> {cand.drop:.4g} on "
            f"{n_held} held-back samples"
        )
        self.say(what, changed)


def _with_outputs(teacher: ir.Model, student: ir.Model, names: list[str]) -> ir.Model:
    """A copy of the teacher with the hint tensors as extra outputs; a name that is not a
    computed tensor of both graphs is a usage error."""
    copy = _clone(teacher)
    mine = {v.name: v for node in copy.graph for v in node.outputs if v.name}
    theirs = {v.name for node in student.graph for v in node.outputs if v.name}
    missing = [n for n in names if n not in mine or n not in theirs]
    if missing:
        raise OnnxcompError(
            f"--distill-hint: no tensor named {', '.join(missing)} in both the original and "
            "the compressed graph (onnxcomp inspect lists the names)"
        )
    for name in names:
        value = mine[name]
        if value.dtype is None:
            value.dtype = ir.DataType.FLOAT
        copy.graph.outputs.append(value)
    return copy


def _clone(model: ir.Model) -> ir.Model:
    """A copy that keeps the types onnx_ir cannot hold (``clone`` drops ``meta``)."""
    copy = model.clone()
    opaque_types.carry(model, copy)
    return copy
