"""``--recover blockwise``: AdaRound/BRECQ-style reconstruction, block by block, last step.

Cheaper than distilling the whole graph: each block (blocks.py: a weighted layer with
its weight decoding and the nodes around it the original lacks) is rebuilt alone, fed
the original model's values at its inputs (onnxruntime, on --calib) and matched on the
original's value at its output. Its codes are re-rounded by AdaRound, codebooks and
float vectors retrained (adaround.py); a block is rebuilt only where its error on the
training samples goes down. A block whose ops the op table cannot run, or whose output
lost channels, is left and named. As for distill, a seeded quarter of the samples is
held back and the result is kept only when the task metric on it improves. Torch is
imported only when the pass runs (``pip install 'onnxcomp[distill]'``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError
from onnxcomp.graph import opaque_types
from onnxcomp.methods.distill.blocks import Block, find_blocks
from onnxcomp.methods.distill.forms import find_forms, write_back
from onnxcomp.methods.distill.passes import TeacherPass, run, split
from onnxcomp.metrics import Judge
from onnxcomp.runtime import capture
from onnxcomp.runtime.session import make_session

logger = logging.getLogger(__name__)

MAX_SAMPLES = 256  # training samples a block is fitted on
BATCH = 32
MEMORY = 1 << 30  # bytes of captured values held at once (blocks go in groups)


def require_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise OnnxcompError("--recover blockwise needs PyTorch: pip install 'onnxcomp[distill]'")


def anchors(teacher: ir.Model) -> set[str]:
    """The names of the values the original computes (its inputs included)."""
    names = {v.name or "" for v in teacher.graph.inputs}
    return names | {v.name or "" for n in teacher.graph for v in n.outputs}


def _capture(
    model: ir.Model, names: list[str], feeds: dict[str, np.ndarray], batch: int
) -> dict[str, np.ndarray]:
    """The ``names`` values of ``model`` over every sample of ``feeds``."""
    if not names:
        return {}
    sess = capture.session(model, names)
    n = len(next(iter(feeds.values())))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for start in range(0, n, batch):
        out = capture.run(sess, names, {k: v[start : start + batch] for k, v in feeds.items()})
        for k in names:
            parts[k].append(np.asarray(out[k]))
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


class BlockwisePass(TeacherPass):
    rung = "blockwise"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.left: dict[str, str] = {}  # block -> why it was not rebuilt
        self.errors: dict[str, tuple[float, float]] = {}  # block -> (stored, rebuilt)
        self.ragged = ""  # which samples were used when their shapes differ

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        require_torch()
        import torch

        from onnxcomp.methods.distill.adaround import (
            block_error,
            optimize,
            runnable,
            unsupported,
        )
        from onnxcomp.methods.distill.block_params import build_params, original_weights

        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        teacher = self.teacher()
        assert teacher is not None, "the teacher was not snapshotted"
        start = time.perf_counter()
        blocks = find_blocks(model, anchors(teacher), runnable)
        feeds, fixed, n = self.samples(model)
        train_idx, held_idx = split(n, self.options.seed)
        batch = fixed or BATCH
        train_idx = train_idx[:MAX_SAMPLES]
        if fixed is not None:
            train_idx = train_idx[: max(fixed, len(train_idx) - len(train_idx) % fixed)]
            held_idx = held_idx[: max(fixed, len(held_idx) - len(held_idx) % fixed)]
        train = {k: v[train_idx] for k, v in feeds.items()}
        held = {k: v[held_idx] for k, v in feeds.items()}

        for block in blocks:
            bad = unsupported(block) if not block.skip else []
            if bad:
                block.skip = f"the op table cannot run {', '.join(bad)}"
        live = [b for b in blocks if not b.skip]
        sources, sizes = self._probe(model, teacher, live, train, batch)
        forms = find_forms(model, self.reduced)
        keep_zeros = self.options.prunes
        values: dict[str, np.ndarray] = {}
        steps, lr = self.options.distill_steps, self.options.lr
        for group in _groups([b for b in live if not b.skip], sizes, len(train_idx)):
            teacher_names = sorted(
                {b.output for b in group}
                | {i for b in group for i in b.inputs if sources[b.name, i] == "teacher"}
            )
            student_names = sorted(
                {i for b in group for i in b.inputs if sources[b.name, i] == "student"}
            )
            got = _capture(teacher, teacher_names, train, batch)
            mine = _capture(model, student_names, train, batch)
            for i, block in enumerate(group):
                inputs = {
                    k: (got if sources[block.name, k] == "teacher" else mine)[k]
                    for k in block.inputs
                }
                target = got[block.output].astype(np.float32)
                originals = original_weights(teacher, block.output)
                params, plain, left = build_params(
                    model.graph, block, forms, originals, keep_zeros=keep_zeros,
                    reduced=self.reduced, opsets=dict(model.opset_imports),
                )  # fmt: skip
                before = block_error(plain, inputs, target, batch)
                after = optimize(
                    params, inputs, target, before, steps=steps, lr=lr, batch=batch,
                    seed=self.options.seed + i,
                )  # fmt: skip
                self.errors[block.name] = (before, after)
                if after < before:
                    values.update(params.stored())
                if left:
                    self.left[block.name] = f"codes {', '.join(left)} kept: no original matched"
            del got, mine
        self.left.update({b.name: b.skip for b in blocks if b.skip})
        candidate = _clone(model)
        changed = write_back(candidate, values)
        ref = make_session(teacher)
        plain_v = _verdict(ref, model, held, batch, self.options)
        cand_v = _verdict(ref, candidate, held, batch, self.options)
        p_gauge, c_gauge = plain_v.gauge()[0], cand_v.gauge()[0]
        self.kept = bool(changed) and (
            cand_v.drop < plain_v.drop or (cand_v.drop == plain_v.drop and c_gauge < p_gauge)
        )
        self.figures = {
            "plain_drop": plain_v.drop, "rebuilt_drop": cand_v.drop, "plain_gauge": p_gauge,
            "rebuilt_gauge": c_gauge, "seconds": time.perf_counter() - start,
        }  # fmt: skip
        self._note(plain_v, cand_v, len(train_idx), len(held_idx), len(changed))
        return ir.passes.PassResult(candidate if self.kept else _clone(model), modified=self.kept)

    def _probe(
        self, model: ir.Model, teacher: ir.Model, blocks: list[Block],
        train: dict[str, np.ndarray], batch: int,
    ) -> tuple[dict[tuple[str, str], str], dict[str, int]]:  # fmt: skip
        """Which model feeds each block input (the original unless the shapes differ:
        channels removed before it), and each block's bytes per sample; blocks whose
        output changed shape get ``skip``."""
        one = {k: v[:batch] for k, v in train.items()}
        names = sorted({b.output for b in blocks} | {i for b in blocks for i in b.inputs})
        theirs = _capture(teacher, names, one, batch)
        mine = _capture(model, names, one, batch)
        sources: dict[tuple[str, str], str] = {}
        sizes: dict[str, int] = {}
        rows = len(next(iter(one.values())))
        for block in blocks:
            if theirs[block.output].shape != mine[block.output].shape:
                block.skip = f"its output '{block.output}' changed shape (channels removed)"
                continue
            if theirs[block.output].dtype.kind != "f":
                block.skip = f"its output '{block.output}' is not float"
                continue
            size = theirs[block.output].nbytes
            for i in block.inputs:
                same = theirs[i].shape == mine[i].shape and theirs[i].dtype == mine[i].dtype
                sources[block.name, i] = "teacher" if same else "student"
                size += theirs[i].nbytes
            sizes[block.name] = size // max(rows, 1)
        return sources, sizes

    def _note(self, plain: Any, cand: Any, n_train: int, n_held: int, changed: int) -> None:
        rebuilt = sum(1 for b, a in self.errors.values() if a < b)
        ratios = [a / b for b, a in self.errors.values() if b > 0 and a < b]
        median = f", block error x{float(np.median(ratios)):.3g} (median)" if ratios else ""
        left = "; ".join(f"{k}: {v}" for k, v in sorted(self.left.items()))
        what = (
            f"blockwise{self.after} (AdaRound, {self.options.distill_steps} steps per block "
            f"on {n_train} samples{'; ' + self.ragged if self.ragged else ''}): {rebuilt} of "
            f"{len(self.errors)} blocks rebuilt{median}"
            + (f"; left: {left}" if left else "")
            + f"; {plain.metric} drop {plain.drop:.4g} -> {cand.drop:.4g} on {n_held} "
            "held-back samples"
        )
        self.say(what, changed)


def _groups(blocks: list[Block], sizes: dict[str, int], n: int) -> list[list[Block]]:
    """Consecutive blocks whose captured values fit in MEMORY together."""
    groups: list[list[Block]] = []
    used = 0
    for block in blocks:
        need = sizes.get(block.name, 0) * n
        if not groups or (groups[-1] and used + need > MEMORY):
            groups.append([])
            used = 0
        groups[-1].append(block)
        used += need
    return groups


def _verdict(ref: Any, model: ir.Model, feeds: dict[str, np.ndarray], batch: int, options):
    judge = Judge.for_session(ref, options)
    judge.update(run(ref, feeds, batch), run(make_session(model), feeds, batch), feed=feeds)
    return judge.verdict()


def _clone(model: ir.Model) -> ir.Model:
    """A copy that keeps the types onnx_ir cannot hold (``clone`` drops ``meta``)."""
    copy = model.clone()
    opaque_types.carry(model, copy)
    return copy
