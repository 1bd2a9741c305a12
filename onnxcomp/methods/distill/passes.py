"""``--recover distill``: the compressed graph trained against the original, last step.

The teacher (the prepared model before any compression) runs in onnxruntime once over
the calibration samples; a seeded quarter of them is held back. The student (the
compressed graph as a torch module, student.py) trains on the rest; its values are
written back into a copy of the same graph by name, and the copy is kept only when the
Judge's drop on the held-back samples improves on the plain compressed model (as
methods/recover/guard.py does for bias correction). Torch is imported only when the
pass runs (``pip install 'onnxcomp[distill]'``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph import opaque_types
from onnxcomp.io.data import DataSource, input_specs
from onnxcomp.methods.distill.forms import find_forms, write_back
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


def collect(data: DataSource, names: list[str]) -> dict[str, np.ndarray]:
    """Every calibration sample, stacked along the batch axis, per input."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in data:
        for n in names:
            parts[n].append(np.asarray(batch.feed[n]))
    if not names or not parts[names[0]]:
        raise OnnxcompError("--recover distill: the calibration data holds no sample")
    return {n: np.concatenate(v, axis=0) for n, v in parts.items()}


def split(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-back) sample indices: a seeded quarter held back, both sorted."""
    if n < MIN_SAMPLES:
        raise OnnxcompError(
            f"--recover distill needs at least {MIN_SAMPLES} calibration samples, got {n}"
        )
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * HELD_BACK))
    return np.sort(order[held:]), np.sort(order[:held])


def run(session: Any, feeds: dict[str, np.ndarray], batch: int) -> list[np.ndarray]:
    """The session's outputs over all samples, ``batch`` at a time (a fixed batch size
    drops a ragged tail; callers size the samples to it)."""
    n = len(next(iter(feeds.values())))
    chunks = []
    for start in range(0, n, batch):
        part = {k: v[start : start + batch] for k, v in feeds.items()}
        chunks.append(session.run(None, part))
    return [np.concatenate([c[i] for c in chunks], axis=0) for i in range(len(chunks[0]))]


class DistillPass(ir.passes.FunctionalPass):
    def __init__(
        self,
        options: CompressOptions,
        data: Callable[[], DataSource],
        teacher: Callable[[], ir.Model | None],
        report: CompressReport | None = None,
        *,
        reduced: bool = False,
    ) -> None:
        super().__init__()
        self.options, self.data, self.teacher = options, data, teacher
        self.report, self.reduced = report, reduced
        self.kept = False
        self.figures: dict[str, float] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxcomp.methods.distill.quant_ops import unsupported

        bad = unsupported(model.graph)
        if bad:
            raise OnnxcompError(
                f"--recover distill cannot differentiate op(s) {', '.join(bad)} of this graph"
            )
        require_torch()
        teacher = self.teacher()
        assert teacher is not None, "the teacher was not snapshotted"
        start = time.perf_counter()
        specs = [s for s in input_specs(model) if s.name]
        fixed = specs[0].fixed_batch if specs else None
        feeds = collect(self.data(), [s.name for s in specs])
        n = len(next(iter(feeds.values())))
        if fixed is not None:
            n -= n % fixed
            feeds = {k: v[:n] for k, v in feeds.items()}
        train_idx, held_idx = split(n)
        batch = fixed or BATCH
        if fixed is not None:  # whole batches on both sides
            train_idx = train_idx[: len(train_idx) - len(train_idx) % fixed]
            held_idx = held_idx[: max(fixed, len(held_idx) - len(held_idx) % fixed)]
        train_feeds = {k: v[train_idx] for k, v in feeds.items()}
        held_feeds = {k: v[held_idx] for k, v in feeds.items()}
        ref = make_session(teacher)
        out_names = [o.name for o in ref.get_outputs()]
        teacher_train = run(ref, train_feeds, batch)
        teacher_held = run(ref, held_feeds, batch)

        from onnxcomp.methods.distill.student import Student
        from onnxcomp.methods.distill.train import train

        forms = find_forms(model, self.reduced)
        targets, kinds = self._targets(model, out_names, teacher_train)
        student = Student(model, forms, keep_zeros=self.options.prunes)
        steps, lr = self.options.distill_steps, self.options.lr
        first, last = train(
            student, train_feeds, targets, steps=steps, lr=lr, batch=batch, seed=SEED,
            exact=fixed is not None,
        )  # fmt: skip
        candidate = _clone(model)
        changed = write_back(candidate, student.stored_values())
        plain_v = self._verdict(model, out_names, teacher_held, held_feeds, batch, ref)
        cand_v = self._verdict(candidate, out_names, teacher_held, held_feeds, batch, ref)
        p_gauge, c_gauge = plain_v.gauge()[0], cand_v.gauge()[0]
        self.kept = cand_v.drop < plain_v.drop or (
            cand_v.drop == plain_v.drop and c_gauge < p_gauge
        )
        self.figures = {
            "plain_drop": plain_v.drop, "distilled_drop": cand_v.drop, "plain_gauge": p_gauge,
            "distilled_gauge": c_gauge, "loss_first": first, "loss_last": last,
            "seconds": time.perf_counter() - start,
        }  # fmt: skip
        self._note(kinds, plain_v, cand_v, len(train_idx), len(held_idx), len(changed))
        return ir.passes.PassResult(candidate if self.kept else _clone(model), modified=self.kept)

    def _targets(self, model: ir.Model, names: list[str], teacher: list[np.ndarray]):
        from onnxcomp.methods.distill.train import make_target

        task = getattr(self.options, "task", None)
        targets, kinds = [], []
        for name, array in zip(names, teacher, strict=True):
            if array.dtype.kind != "f":
                continue  # labels and other integer outputs carry no gradient
            scores = array.ndim == 2 and array.shape[1] > 1 and task in (None, "classify")
            softmax_input = None
            value = next((o for o in model.graph.outputs if o.name == name), None)
            producer = value.producer() if value is not None else None
            if scores and producer is not None and producer.op_type == "Softmax":
                softmax_input = producer.inputs[0].name if producer.inputs[0] else None
            kind = "kl" if scores else "mse"
            targets.append(make_target(name, kind, array, softmax_input))
            kinds.append(
                f"'{name}': KL at T=2 (class scores)" if scores
                else f"'{name}': per-component normalized MSE"
            )  # fmt: skip
        if not targets:
            raise OnnxcompError("--recover distill: the model has no float output to match")
        return targets, kinds

    def _verdict(
        self, model: ir.Model, names: list[str], teacher: list[np.ndarray],
        feeds: dict[str, np.ndarray], batch: int, ref: Any,
    ) -> Verdict:  # fmt: skip
        options = self.options
        judge = Judge(
            names, options.task, settings=options.task_settings(),
            metric_fn=options.metric_fn, declared=declared_shapes(ref),
        )  # fmt: skip
        judge.update(teacher, run(make_session(model), feeds, batch), feed=feeds)
        return judge.verdict()

    def _note(
        self, kinds: list[str], plain: Verdict, cand: Verdict, n_train: int, n_held: int,
        changed: int,
    ) -> None:  # fmt: skip
        f = self.figures
        what = (
            f"distill ({self.options.distill_steps} steps on {n_train} samples, loss "
            f"{f['loss_first']:.4g} -> {f['loss_last']:.4g}; {'; '.join(kinds)}): "
            f"{plain.metric} drop {plain.drop:.4g} -> {cand.drop:.4g} on {n_held} held-back "
            f"samples"
        )
        if self.kept:
            note = f"{what}; kept ({changed} tensors changed, {f['seconds']:.1f} s)"
        else:
            note = f"{what}; not kept: the plain compressed model is written"
        logger.info(note)
        if self.report is not None:
            self.report.notes.append(note)


def _clone(model: ir.Model) -> ir.Model:
    """A copy that keeps the types onnx_ir cannot hold (``clone`` drops ``meta``)."""
    copy = model.clone()
    opaque_types.carry(model, copy)
    return copy
